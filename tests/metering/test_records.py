"""The records' own rules: validation of usages, and an API key's activity."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime

import pytest

from speech.metering.records import ApiKey, DailyUsage, UsageIn, UsageRecord
from tests.metering.conftest import PRICES


def test_api_key_active_uses_real_time() -> None:
    past = ApiKey(
        "abcdefabcdef", "acct_abcdefabcdef", "k", "2000-01-01T00:00:00.000Z", expires="2001-01-01T00:00:00.000Z"
    )
    assert not past.active
    assert past.is_active(datetime(2000, 6, 1, tzinfo=UTC))
    assert not past.is_active("2001-01-01T00:00:00Z")
    assert ApiKey("abcdefabcdef", "acct_x", "k", "2000-01-01T00:00:00.000Z").active
    assert not ApiKey("abcdefabcdef", "acct_x", "k", "2000", revoked="2000-01-01T00:00:00.000Z").active


def test_usage_in_validation() -> None:
    good = dict(
        idempotency_key="i",
        key_id="k",
        kind="asr",
        provider="google",
        engine="local",
        unit_price_uomcu=50_000_000,
        cost_uomcu=834,
        audio_ms=1,
    )
    UsageIn(**good)  # type: ignore[arg-type]
    bad_changes = [
        {"cost_uomcu": 833},  # does not match the unit price
        {"kind": "stt"},
        {"idempotency_key": ""},
        {"idempotency_key": "x" * 201},
        {"provider": ""},
        {"audio_ms": -1, "cost_uomcu": 0},
        {"audio_ms": 1.0},
        {"characters": 5},
        {"received_ms": -1},
        {"kind": "tts"},
    ]
    for change in bad_changes:
        with pytest.raises(ValueError):
            UsageIn(**{**good, **change})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        UsageIn.asr(PRICES, idempotency_key="i", key_id="k", provider="nope", engine="e", audio_ms=1)
    with pytest.raises(ValueError):
        UsageIn.tts(PRICES, idempotency_key="i", key_id="k", provider="riva", engine="e", characters=-1)
    with pytest.raises(ValueError, match="no model, tokens or estimated flag"):
        UsageIn(**{**good, "model": "gpt-4o"})  # type: ignore[arg-type]


def test_llm_usage_in_validation() -> None:
    good = dict(
        idempotency_key="i",
        key_id="k",
        kind="llm",
        provider="openai",
        engine="openai",
        unit_price_uomcu=7_000_000_000,
        cost_uomcu=21_000_000,
        model="gpt-4o-mini",
        input_tokens=1000,
        output_tokens=500,
        output_unit_price_uomcu=28_000_000_000,
        estimated=False,
    )
    UsageIn(**good)  # type: ignore[arg-type]
    bad_changes = [
        {"cost_uomcu": 20_999_999},  # does not match the unit prices and tokens
        {"cost_uomcu": 21_000_001},
        {"model": None},
        {"model": ""},
        {"model": "m" * 201},
        {"model": "bad\nname"},
        {"input_tokens": None},
        {"input_tokens": -1},
        {"output_tokens": 1.5},
        {"output_tokens": True},
        {"output_unit_price_uomcu": None},
        {"estimated": None},
        {"estimated": 1},
        {"audio_ms": 5},
        {"received_ms": 5},
        {"characters": 5},
        {"upstream_characters": 5},
    ]
    for change in bad_changes:
        with pytest.raises(ValueError):
            UsageIn(**{**good, **change})  # type: ignore[arg-type]
    made = UsageIn.llm(
        PRICES,
        idempotency_key="i",
        key_id="k",
        provider="openai",
        engine="openai",
        model="gpt-4o-mini-2024-07-18",
        input_tokens=1000,
        output_tokens=500,
        estimated=True,
    )
    assert (made.unit_price_uomcu, made.output_unit_price_uomcu, made.cost_uomcu) == (7 * 10**9, 28 * 10**9, 21 * 10**6)
    free = UsageIn.llm(
        PRICES,
        idempotency_key="i",
        key_id="k",
        provider="ollama",
        engine="ollama",
        model="llama3.2",
        input_tokens=10**6,
        output_tokens=10**6,
        estimated=False,
        free=True,
    )
    assert (free.unit_price_uomcu, free.output_unit_price_uomcu, free.cost_uomcu) == (0, 0, 0)
    with pytest.raises(ValueError, match="no LLM price for model 'unpriced'"):
        UsageIn.llm(
            PRICES,
            idempotency_key="i",
            key_id="k",
            provider="openai",
            engine="openai",
            model="unpriced",
            input_tokens=1,
            output_tokens=1,
            estimated=False,
        )


def test_unknown_kind_keeps_its_cost_without_a_quantity() -> None:
    day = DailyUsage(day="2025-01-31", kind="llm", records=3, audio_ms=None, characters=None, cost_uomcu=1500)
    assert day.to_json() == {
        "day": "2025-01-31",
        "kind": "llm",
        "records": 3,
        "quantity": None,
        "unit": None,
        "cost": 0.0015,
        "cost_uomcu": 1500,
    }


def test_a_usage_record_is_its_usage_with_id_account_and_time() -> None:
    # The SQL ledger stores a UsageIn field by field and reads it back as a UsageRecord.
    stored = {f.name for f in fields(UsageRecord)} - {"id", "account_id", "created"}
    assert stored == {f.name for f in fields(UsageIn)}
