"""Prometheus metrics of one gateway, served at ``GET /metrics``.

One :class:`GatewayMetrics` per app, on its own ``CollectorRegistry`` (never
the process-wide default), so several gateways in one process (the tests)
never share or collide. Names carry the ``speech_`` prefix and their unit.

**Labels come only from bounded sets**: ``route`` (the configured ASR and TTS
routes), ``engine`` (the engines the chains name), ``provider`` (the
configured LLM providers), ``model`` (the configured model prefix that
admitted the model, never the name the caller sent), ``kind`` and
``error`` / ``outcome`` (the short fixed vocabularies below). Any other value
becomes ``other``. Keys, key ids, account ids and free text never become
labels.

**Hot path**: nothing here runs per audio frame. An ASR stream resolves its
label children once (:class:`AsrStreamMeter`) and adds audio per utterance,
and at most every :data:`RECEIVED_FLUSH_MS` of received audio; TTS counts per
request or sentence; usage per ledger record.

**VAD speech ratio**: the share of a stream's audio that the VAD passed
upstream (speech plus its pre-roll and tail), observed once per stream at
close (:data:`RATIO_MIN_MS` of audio at least). Across streams use
``rate(speech_asr_audio_forwarded_seconds_total) /
rate(speech_asr_audio_received_seconds_total)``.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.metrics import MetricWrapperBase

from speech.errors import (
    BadRequest,
    CallerCredentialError,
    CallerQuotaExceeded,
    EngineOverloaded,
    EngineUnavailable,
    NotConfigured,
    SpeechError,
    UpstreamAuthError,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamServerError,
    UpstreamTimeout,
)
from speech.metering.records import UsageRecord
from speech.settings import LLM_PROVIDERS, Settings

OTHER = "other"
BYTES_PER_MS = 32  # 16 kHz PCM16 mono
# An ASR stream adds its received audio at each utterance end, and at least this often.
RECEIVED_FLUSH_MS = 5000
# Streams shorter than this are left out of the speech-ratio histogram.
RATIO_MIN_MS = 1000

# The error vocabulary, most specific class first.
_ERROR_CLASSES: tuple[tuple[type[SpeechError], str], ...] = (
    (CallerCredentialError, "caller_key"),
    (CallerQuotaExceeded, "caller_key"),
    (UpstreamRateLimited, "rate_limited"),
    (UpstreamTimeout, "timeout"),
    (UpstreamServerError, "server_error"),
    (EngineOverloaded, "overloaded"),
    (EngineUnavailable, "unavailable"),
    (UpstreamAuthError, "auth"),
    (NotConfigured, "not_configured"),
    (UpstreamRejected, "rejected"),
    (BadRequest, "rejected"),
    (UpstreamProtocolError, "protocol"),
)
ERROR_CLASSES = (*sorted({c for _, c in _ERROR_CLASSES}), "error")

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
LLM_LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
RATIO_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def error_class(exc: BaseException) -> str:
    """A gateway error's class in the fixed vocabulary (``error`` for anything else)."""
    for cls, name in _ERROR_CLASSES:
        if isinstance(exc, cls):
            return name
    return "error"


class GatewayMetrics:
    """The gateway's metrics and the label values it allows."""

    def __init__(self, settings: Settings, *, process: bool = True) -> None:
        self.registry = reg = CollectorRegistry()
        if process:
            ProcessCollector(registry=reg)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        routes = settings.routes
        self._routes = frozenset(routes.asr) | frozenset(routes.tts)
        self._engines = frozenset(e for table in (routes.asr, routes.tts) for chain in table.values() for e in chain)
        self._prefixes: dict[str, tuple[str, ...]] = {}
        for name in LLM_PROVIDERS:
            provider = getattr(settings.llm, name)
            if provider.enabled:
                self._prefixes[name] = tuple(provider.model_prefixes)
        self._children: dict[tuple[Any, ...], Any] = {}

        self.streams_active = Gauge(
            "speech_streams_active",
            "Open streams: ASR websockets (kind asr), streamed TTS over HTTP (tts_http) and TTS websockets "
            "(tts_ws), by route and the first engine of the route's chain",
            ["kind", "route", "engine"],
            registry=reg,
        )
        self.asr_received = Counter(
            "speech_asr_audio_received_seconds_total",
            "Client audio received by ASR (streams and file transcriptions), silence included",
            ["route"],
            registry=reg,
        )
        self.asr_forwarded = Counter(
            "speech_asr_audio_forwarded_seconds_total",
            "ASR audio the VAD passed to the recognizers (speech with its pre-roll and tail)",
            ["route"],
            registry=reg,
        )
        self.vad_ratio = Histogram(
            "speech_asr_vad_speech_ratio",
            "Per ASR stream, at its close: forwarded audio / received audio",
            ["route"],
            buckets=RATIO_BUCKETS,
            registry=reg,
        )
        self.asr_billed = Counter(
            "speech_asr_billed_seconds_total",
            "ASR audio billed (usage records), by route and the engine that answered",
            ["route", "engine"],
            registry=reg,
        )
        self.tts_characters = Counter(
            "speech_tts_characters_total",
            "TTS characters billed (usage records), by route and the engine(s) that spoke them",
            ["route", "engine"],
            registry=reg,
        )
        self.usage_cost = Counter(
            "speech_usage_cost_uomcu_total",
            "Cost of the usage records written, in micro-OMCU, by kind (asr, tts, llm) and route (LLM: provider)",
            ["kind", "route"],
            registry=reg,
        )
        self.upstream_latency = Histogram(
            "speech_upstream_latency_seconds",
            "ASR: end of an utterance's audio to its final transcript. "
            "TTS: request to an engine to its first audio chunk",
            ["kind", "engine"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.upstream_errors = Counter(
            "speech_upstream_errors_total",
            "Engine failures (each one, also those a failover absorbed), by error class",
            ["kind", "engine", "error"],
            registry=reg,
        )
        self.llm_requests = Counter(
            "speech_llm_requests_total",
            "Chat completions sent upstream, by how they ended (ok, client_gone or an error class)",
            ["provider", "outcome"],
            registry=reg,
        )
        self.llm_input_tokens = Counter(
            "speech_llm_input_tokens_total",
            "LLM input tokens billed, by provider and the configured model prefix",
            ["provider", "model"],
            registry=reg,
        )
        self.llm_output_tokens = Counter(
            "speech_llm_output_tokens_total",
            "LLM output tokens billed, by provider and the configured model prefix",
            ["provider", "model"],
            registry=reg,
        )
        self.llm_latency = Histogram(
            "speech_llm_upstream_latency_seconds",
            "Chat completion sent to the upstream's answer: the whole answer (stream false) or its first event "
            "(stream true)",
            ["provider", "stream"],
            buckets=LLM_LATENCY_BUCKETS,
            registry=reg,
        )
        self.llm_errors = Counter(
            "speech_llm_upstream_errors_total",
            "LLM upstream failures, before or during the answer, by error class",
            ["provider", "error"],
            registry=reg,
        )

    # ------------------------------------------------------------ labels

    def route(self, value: str) -> str:
        return value if value in self._routes else OTHER

    def engine(self, value: str) -> str:
        """A configured engine, or a ``+`` combination of them (a TTS stream
        that failed over between sentences)."""
        if value in self._engines or (value and all(p in self._engines for p in value.split("+"))):
            return value
        return OTHER

    def provider(self, value: str) -> str:
        return value if value in self._prefixes else OTHER

    def model(self, provider: str, model: str | None) -> str:
        """The longest configured prefix of ``provider`` that admits ``model``."""
        best: str | None = None
        for prefix in self._prefixes.get(provider, ()):
            if (model or "").startswith(prefix) and (best is None or len(prefix) > len(best)):
                best = prefix
        if best is None:
            return OTHER
        return best or "any"  # the prefix "" admits every model

    def _child(self, metric: MetricWrapperBase, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached: one dict lookup after the first time."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # ------------------------------------------------------------ streams

    def active_streams(self, kind: str, route: str, engine: str) -> Any:
        """The gauge child of one kind of stream: ``inc()`` at open, ``dec()`` at close."""
        return self._child(self.streams_active, kind, self.route(route), self.engine(engine))

    def asr_stream(self, route: str, engine: str) -> AsrStreamMeter:
        return AsrStreamMeter(self, self.route(route), self.engine(engine))

    def asr_file(self, route: str, received_ms: int, forwarded_ms: int) -> None:
        """A whole file transcribed (``/v1/audio/transcriptions``)."""
        route = self.route(route)
        self._child(self.asr_received, route).inc(received_ms / 1000)
        self._child(self.asr_forwarded, route).inc(forwarded_ms / 1000)
        if received_ms >= RATIO_MIN_MS:
            self._child(self.vad_ratio, route).observe(forwarded_ms / received_ms)

    # ---------------------------------------------- engines (failover observer)

    def upstream_error(self, kind: str, engine: str, error: BaseException) -> None:
        self._child(self.upstream_errors, kind, self.engine(engine), error_class(error)).inc()

    def first_audio(self, kind: str, engine: str, seconds: float) -> None:
        self._child(self.upstream_latency, kind, self.engine(engine)).observe(seconds)

    # ------------------------------------------------------------ usage

    def usage(self, record: UsageRecord) -> None:
        """One new usage record (from :class:`~speech.observability.ledger.ObservedLedger`)."""
        kind = record.kind
        if kind == "llm":
            provider = self.provider(record.provider)
            model = self.model(record.provider, record.model)
            self._child(self.usage_cost, kind, provider).inc(record.cost_uomcu)
            self._child(self.llm_input_tokens, provider, model).inc(record.input_tokens or 0)
            self._child(self.llm_output_tokens, provider, model).inc(record.output_tokens or 0)
            return
        route, engine = self.route(record.provider), self.engine(record.engine)
        self._child(self.usage_cost, kind, route).inc(record.cost_uomcu)
        if kind == "asr":
            self._child(self.asr_billed, route, engine).inc((record.audio_ms or 0) / 1000)
        elif kind == "tts":
            self._child(self.tts_characters, route, engine).inc(record.characters or 0)

    # ------------------------------------------------------------ LLM

    def llm(self, provider: str) -> LlmMeter:
        return LlmMeter(self, self.provider(provider))


class AsrStreamMeter:
    """One ASR stream's metrics, label children resolved once at open.

    The bridge calls :meth:`opened`, then :meth:`utterance_ended` per
    utterance (and :meth:`received` when :attr:`next_flush_ms` is reached),
    :meth:`forwarded` for an utterance abandoned at close, and
    :meth:`closed` once."""

    __slots__ = (
        "_metrics",
        "_active",
        "_received",
        "_forwarded",
        "_ratio",
        "_latency",
        "received_ms",
        "forwarded_ms",
        "next_flush_ms",
        "_open",
    )

    def __init__(self, metrics: GatewayMetrics, route: str, engine: str) -> None:
        self._metrics = metrics
        self._active = metrics.active_streams("asr", route, engine)
        self._received = metrics._child(metrics.asr_received, route)
        self._forwarded = metrics._child(metrics.asr_forwarded, route)
        self._ratio = metrics._child(metrics.vad_ratio, route)
        self._latency: dict[str, Any] = {}
        self.received_ms = 0  # counted so far
        self.forwarded_ms = 0
        self.next_flush_ms = RECEIVED_FLUSH_MS
        self._open = False

    def opened(self) -> None:
        self._open = True
        self._active.inc()

    def received(self, total_ms: int) -> None:
        """The stream has received ``total_ms`` of client audio in all."""
        if total_ms > self.received_ms:
            self._received.inc((total_ms - self.received_ms) / 1000)
            self.received_ms = total_ms
        self.next_flush_ms = total_ms + RECEIVED_FLUSH_MS

    def forwarded(self, pcm_bytes: int) -> None:
        if pcm_bytes > 0:
            ms = pcm_bytes // BYTES_PER_MS
            self.forwarded_ms += ms
            self._forwarded.inc(ms / 1000)

    def utterance_ended(self, received_total_ms: int, forwarded_bytes: int) -> None:
        self.forwarded(forwarded_bytes)
        self.received(received_total_ms)

    def final(self, engine: str, ended_at: float) -> None:
        """The first final of an utterance whose audio ended at ``ended_at`` (``time.monotonic()``)."""
        child = self._latency.get(engine)
        if child is None:
            child = self._latency[engine] = self._metrics._child(
                self._metrics.upstream_latency, "asr", self._metrics.engine(engine)
            )
        child.observe(max(0.0, time.monotonic() - ended_at))

    def closed(self, received_total_ms: int) -> None:
        if not self._open:
            return
        self._open = False
        self.received(received_total_ms)
        if self.received_ms >= RATIO_MIN_MS:
            self._ratio.observe(min(1.0, self.forwarded_ms / self.received_ms))
        self._active.dec()


class LlmMeter:
    """One chat completion's metrics (its provider's children)."""

    __slots__ = ("_metrics", "_provider")

    def __init__(self, metrics: GatewayMetrics, provider: str) -> None:
        self._metrics = metrics
        self._provider = provider

    def answered(self, stream: bool, seconds: float) -> None:
        """The upstream answered (plain: the whole answer; stream: its first event)."""
        m = self._metrics
        m._child(m.llm_latency, self._provider, "true" if stream else "false").observe(seconds)

    def finished(self, outcome: str) -> None:
        """``ok`` or ``client_gone``."""
        m = self._metrics
        m._child(m.llm_requests, self._provider, outcome).inc()

    def failed(self, error: BaseException) -> None:
        """The upstream failed (before or during the answer). Anything but a
        gateway error (a cancellation) counts nothing."""
        if not isinstance(error, SpeechError):
            return
        m, cls = self._metrics, error_class(error)
        m._child(m.llm_errors, self._provider, cls).inc()
        m._child(m.llm_requests, self._provider, cls).inc()

    def stream_finished(self, outcome: str, error: BaseException | None) -> None:
        """A relayed stream ended: ``complete``, ``client_gone``, ``upstream_error`` or ``error``."""
        if error is not None:
            self.failed(error)
        elif outcome == "complete":
            self.finished("ok")
        elif outcome == "client_gone":
            self.finished("client_gone")
        else:
            self.finished("error")
