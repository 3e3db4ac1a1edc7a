"""GatewayMetrics without a server: label vocabularies, the error classes,
the per-stream meter, usage records, and the failover observer."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from speech.errors import (
    CallerCredentialError,
    EngineOverloaded,
    InvalidTtsRequest,
    NotConfigured,
    SpeechError,
    UpstreamAuthError,
    UpstreamClientError,
    UpstreamGatewayTimeout,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamServerError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from speech.metering.records import UsageRecord
from speech.observability import metrics as mod
from speech.observability.metrics import ERROR_CLASSES, GatewayMetrics, error_class
from speech.providers.base import SynthesisRequest
from speech.providers.failover import EngineHealth, FailoverRecognizer, FailoverSynthesizer
from speech.settings import load_settings
from tests.metrics_support import Scrape
from tests.providers.test_failover import ScriptedRecognizer, ScriptedSynth, run


def gateway_metrics(**overrides: object) -> GatewayMetrics:
    return GatewayMetrics(load_settings(environ={}, overrides=overrides), process=False)


def scraped(m: GatewayMetrics) -> Scrape:
    return Scrape(generate_latest(m.registry).decode())


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (UpstreamUnavailable("x"), "unavailable"),
        (UpstreamServerError("x"), "server_error"),
        (UpstreamTimeout("x"), "timeout"),
        (UpstreamGatewayTimeout("x"), "timeout"),
        (UpstreamRateLimited("x"), "rate_limited"),
        (EngineOverloaded("x"), "overloaded"),
        (UpstreamAuthError("x"), "auth"),
        (CallerCredentialError("x"), "caller_key"),
        (NotConfigured("x"), "not_configured"),
        (UpstreamRejected("x"), "rejected"),
        (UpstreamClientError("x", status=422), "rejected"),
        (InvalidTtsRequest("x"), "rejected"),
        (UpstreamProtocolError("x"), "protocol"),
        (SpeechError("x"), "error"),
        (RuntimeError("x"), "error"),
    ],
)
def test_error_classes(error: BaseException, expected: str) -> None:
    assert error_class(error) == expected
    assert expected in ERROR_CLASSES


def test_labels_come_only_from_the_configuration() -> None:
    m = gateway_metrics(**{"routes.tts.riva": ["riva", "local"]})
    assert m.route("local") == "local" and m.route("sk_live_secret") == "other"
    assert m.engine("riva") == "riva" and m.engine("local+riva") == "local+riva"
    assert m.engine("google") == "other" and m.engine("local+evil") == "other" and m.engine("") == "other"
    assert m.provider("openai") == "openai" and m.provider("acct_123") == "other"
    assert m.model("openai", "gpt-4o-mini-2024-07-18") == "gpt-4o-mini"  # the longest prefix
    assert m.model("openai", "gpt-4o-2024-08-06") == "gpt-4o"
    assert m.model("openai", "my secret prompt") == "other" and m.model("nobody", "gpt-4o") == "other"
    assert gateway_metrics(**{"llm.openai.model_prefixes": [""]}).model("openai", "anything") == "any"


def test_an_asr_stream_counts_per_utterance_and_at_close() -> None:
    m = gateway_metrics()
    meter = m.asr_stream("local", "local")
    meter.opened()
    assert scraped(m).value("speech_streams_active", kind="asr", route="local", engine="local") == 1
    meter.utterance_ended(received_total_ms=2000, forwarded_bytes=32 * 800)
    meter.received(2500)  # below next_flush_ms: the bridge would not call it, but it is harmless
    meter.forwarded(32 * 200)  # an utterance abandoned at close
    meter.closed(received_total_ms=4000)
    meter.closed(received_total_ms=9999)  # once only
    s = scraped(m)
    assert s.value("speech_streams_active") == 0
    assert s.value("speech_asr_audio_received_seconds_total", route="local") == pytest.approx(4.0)
    assert s.value("speech_asr_audio_forwarded_seconds_total", route="local") == pytest.approx(1.0)
    assert s.value("speech_asr_vad_speech_ratio_sum", route="local") == pytest.approx(0.25)
    assert s.value("speech_asr_vad_speech_ratio_count", route="local") == 1


def test_received_audio_is_flushed_during_long_silences() -> None:
    m = gateway_metrics()
    meter = m.asr_stream("local", "local")
    meter.opened()
    assert meter.next_flush_ms == mod.RECEIVED_FLUSH_MS
    meter.received(mod.RECEIVED_FLUSH_MS + 20)
    assert meter.next_flush_ms == 2 * mod.RECEIVED_FLUSH_MS + 20
    assert scraped(m).value("speech_asr_audio_received_seconds_total") == pytest.approx(5.02)


def record(**fields: object) -> UsageRecord:
    base: dict[str, object] = dict(
        id=1,
        idempotency_key="x",
        key_id="key_secret",
        account_id="acct_secret",
        kind="asr",
        provider="local",
        engine="local",
        audio_ms=None,
        received_ms=None,
        characters=None,
        unit_price_uomcu=1,
        cost_uomcu=0,
        created="2026-01-01T00:00:00Z",
    )
    base.update(fields)
    return UsageRecord(**base)  # type: ignore[arg-type]


def test_usage_records() -> None:
    m = gateway_metrics()
    m.usage(record(kind="asr", audio_ms=1500, cost_uomcu=1250))
    m.usage(record(kind="tts", characters=12, cost_uomcu=360, engine="local+local"))
    m.usage(
        record(kind="llm", provider="openai", engine="openai", model="gpt-4o-2024", input_tokens=7, output_tokens=3)
    )
    m.usage(record(kind="tts", provider="unknown", engine="unknown", characters=1))
    s = scraped(m)
    assert s.value("speech_asr_billed_seconds_total", route="local", engine="local") == 1.5
    assert s.value("speech_tts_characters_total", route="local", engine="local+local") == 12
    assert s.value("speech_tts_characters_total", route="other", engine="other") == 1
    assert s.value("speech_usage_cost_uomcu_total", kind="asr", route="local") == 1250
    assert s.value("speech_usage_cost_uomcu_total", kind="tts") == 360
    assert s.value("speech_llm_input_tokens_total", provider="openai", model="gpt-4o") == 7
    assert s.value("speech_llm_output_tokens_total", provider="openai", model="gpt-4o") == 3
    assert "secret" not in s.text and "gpt-4o-2024" not in s.text


def test_llm_stream_outcomes() -> None:
    m = gateway_metrics()
    meter = m.llm("openai")
    meter.stream_finished("complete", None)
    meter.stream_finished("client_gone", None)
    meter.stream_finished("error", None)
    meter.stream_finished("upstream_error", UpstreamTimeout("x"))
    meter.failed(KeyboardInterrupt())  # not a gateway error: nothing
    s = scraped(m)
    for outcome in ("ok", "client_gone", "error", "timeout"):
        assert s.value("speech_llm_requests_total", provider="openai", outcome=outcome) == 1
    assert s.value("speech_llm_upstream_errors_total", provider="openai", error="timeout") == 1
    assert s.value("speech_llm_requests_total") == 4


async def test_failover_reports_every_engine_failure_and_tts_first_audio() -> None:
    m = gateway_metrics(**{"routes.asr.riva": ["riva", "local"], "routes.tts.riva": ["riva", "local"]})
    health = EngineHealth(30)
    health.observer = m
    rec = FailoverRecognizer("riva", [ScriptedRecognizer("riva", fail_after=2), ScriptedRecognizer("local")], health)
    assert [t.engine for t in await run(rec)] == ["local"]
    synth = FailoverSynthesizer("riva", [ScriptedSynth("riva", fail_after=0), ScriptedSynth("local")], health)
    engine, _ = await synth.synthesize_with_engine(SynthesisRequest("hi"))
    assert engine == "local"
    streamed = FailoverSynthesizer("riva", [ScriptedSynth("local", fail_after=1)], EngineHealth(30))
    streamed.health.observer = m
    with pytest.raises(UpstreamUnavailable):
        _ = [c async for c in streamed.stream(SynthesisRequest("hi"))]  # fails after its first chunk
    s = scraped(m)
    assert s.value("speech_upstream_errors_total", kind="asr", engine="riva", error="unavailable") == 1
    assert s.value("speech_upstream_errors_total", kind="tts", engine="riva", error="unavailable") == 1
    assert s.value("speech_upstream_errors_total", kind="tts", engine="local", error="unavailable") == 1
    assert s.value("speech_upstream_latency_seconds_count", kind="tts", engine="local") == 2
    assert s.value("speech_upstream_latency_seconds_count", kind="tts", engine="riva") == 0
