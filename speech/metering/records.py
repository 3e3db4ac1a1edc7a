"""The ledger's records: accounts, API keys and usage, as the ledger hands them out.

Money is integer µOMCU throughout (see :mod:`speech.metering.prices`);
``to_json`` gives each record's public JSON shape, where money also appears
as float OMCU for display.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Any

from speech.metering import keys as keymod
from speech.metering.checks import (
    MAX_IDEMPOTENCY_KEY_LENGTH,
    MAX_LABEL_LENGTH,
    MAX_MODEL_LENGTH,
    MAX_TOKENS,
    Kind,
    check_int,
    check_kind,
    check_label,
)
from speech.metering.prices import (
    MICRO,
    PriceTable,
    asr_cost_from_unit,
    llm_cost_from_unit,
    tts_cost_from_unit,
)
from speech.metering.timestamps import format_timestamp, parse_timestamp, utc_now


def _micro_to_float(micro: int) -> float:
    # Correctly rounded: int / int in Python is exact-then-rounded.
    return micro / MICRO


@dataclass(frozen=True)
class Account:
    """An account: it holds the money its API keys spend."""

    account_id: str
    name: str
    balance_uomcu: int
    created: str

    @property
    def balance(self) -> Decimal:
        """Balance in OMCU, exact."""
        return Decimal(self.balance_uomcu).scaleb(-6)

    def to_json(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "name": self.name,
            "balance": _micro_to_float(self.balance_uomcu),
            "balance_uomcu": self.balance_uomcu,
            "created": self.created,
        }


@dataclass(frozen=True)
class ApiKey:
    """An API key as stored, without its secret or hash.

    ``expires`` (ISO-8601 UTC) ends the key at that instant; ``max_streams``
    caps its concurrent ASR streams and ``rpm`` its requests per minute
    (``None``: no limit of that kind; enforcement is the caller's, through
    :meth:`~speech.metering.ledger.Ledger.acquire_stream` and
    :meth:`~speech.metering.ledger.Ledger.count_request`).
    """

    key_id: str
    account_id: str
    name: str
    created: str
    revoked: str | None = None
    expires: str | None = None
    max_streams: int | None = None
    rpm: int | None = None

    def is_active(self, at: datetime | str | None = None) -> bool:
        """Not revoked and not expired at ``at`` (default: now)."""
        if self.revoked is not None:
            return False
        if self.expires is None:
            return True
        now = format_timestamp(utc_now()) if at is None else parse_timestamp(at)
        return now < self.expires

    @property
    def active(self) -> bool:
        """Not revoked and not expired now."""
        return self.is_active()

    def to_json(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "account_id": self.account_id,
            "name": self.name,
            "created": self.created,
            "revoked": self.revoked,
            "expires": self.expires,
            "max_streams": self.max_streams,
            "rpm": self.rpm,
        }


@dataclass(frozen=True)
class UsageIn:
    """One billable event, as callers hand it to :meth:`~speech.metering.ledger.Ledger.record_usage`.

    Build it with :meth:`asr`, :meth:`tts` or :meth:`llm`, which price it
    from a :class:`~speech.metering.prices.PriceTable`. The unit price travels
    with the record so a later price change never rewrites history.

    An ``llm`` usage has ``model``, ``input_tokens``, ``output_tokens``,
    ``unit_price_uomcu`` (per million *input* tokens),
    ``output_unit_price_uomcu`` (per million output tokens) and
    ``estimated`` (the token counts are the gateway's estimate because the
    upstream reported none); its cost must equal
    :func:`~speech.metering.prices.llm_cost_from_unit` of those. ASR and TTS
    usages leave these fields ``None``.

    ``idempotency_key`` names the event uniquely and stably, e.g.
    ``"<session id>:<utterance number>"``: recording the same key twice bills
    once.
    """

    idempotency_key: str
    key_id: str
    kind: Kind
    provider: str
    engine: str
    unit_price_uomcu: int
    cost_uomcu: int
    audio_ms: int | None = None
    received_ms: int | None = None
    characters: int | None = None
    upstream_characters: int | None = None  # tts: what the upstream reported billing
    model: str | None = None  # llm
    input_tokens: int | None = None  # llm
    output_tokens: int | None = None  # llm
    output_unit_price_uomcu: int | None = None  # llm: per million output tokens
    estimated: bool | None = None  # llm: the token counts are estimates

    def __post_init__(self) -> None:
        check_label(self.idempotency_key, "idempotency_key", MAX_IDEMPOTENCY_KEY_LENGTH)
        check_label(self.key_id, "key_id", keymod.MAX_KEY_LENGTH)
        check_kind(self.kind)
        check_label(self.provider, "provider", MAX_LABEL_LENGTH)
        check_label(self.engine, "engine", MAX_LABEL_LENGTH)
        check_int(self.unit_price_uomcu, "unit_price_uomcu")
        check_int(self.cost_uomcu, "cost_uomcu")
        llm_fields = (self.model, self.input_tokens, self.output_tokens, self.output_unit_price_uomcu, self.estimated)
        if self.kind == "llm":
            if None in llm_fields or self.audio_ms is not None or self.received_ms is not None:
                raise ValueError(
                    "an llm usage has model, input_tokens, output_tokens, output_unit_price_uomcu and estimated, "
                    "and no audio_ms or received_ms"
                )
            if self.characters is not None or self.upstream_characters is not None:
                raise ValueError("an llm usage has no characters")
            check_label(self.model, "model", MAX_MODEL_LENGTH)
            tokens_in = check_int(self.input_tokens, "input_tokens", maximum=MAX_TOKENS)
            tokens_out = check_int(self.output_tokens, "output_tokens", maximum=MAX_TOKENS)
            unit_out = check_int(self.output_unit_price_uomcu, "output_unit_price_uomcu")
            if not isinstance(self.estimated, bool):
                raise ValueError(f"estimated must be true or false, got {self.estimated!r}")
            expected = llm_cost_from_unit(self.unit_price_uomcu, unit_out, tokens_in, tokens_out)
        elif any(v is not None for v in llm_fields):
            raise ValueError(f"an {self.kind} usage has no model, tokens or estimated flag")
        elif self.kind == "asr":
            if self.audio_ms is None or self.characters is not None:
                raise ValueError("an asr usage has audio_ms and no characters")
            ms = check_int(self.audio_ms, "audio_ms")
            if self.received_ms is not None:
                check_int(self.received_ms, "received_ms")
            expected = asr_cost_from_unit(self.unit_price_uomcu, ms)
        else:
            if self.characters is None or self.audio_ms is not None or self.received_ms is not None:
                raise ValueError("a tts usage has characters and no audio_ms or received_ms")
            chars = check_int(self.characters, "characters")
            expected = tts_cost_from_unit(self.unit_price_uomcu, chars)
        if self.cost_uomcu != expected:
            raise ValueError(f"cost_uomcu {self.cost_uomcu} does not match the unit price and quantity ({expected})")

    @classmethod
    def asr(
        cls,
        prices: PriceTable,
        *,
        idempotency_key: str,
        key_id: str,
        provider: str,
        engine: str,
        audio_ms: int,
        received_ms: int | None = None,
    ) -> UsageIn:
        """An ASR usage of ``audio_ms`` billed milliseconds on route ``provider``."""
        unit = prices.asr_unit_price(provider)
        check_int(audio_ms, "audio_ms")
        return cls(
            idempotency_key=idempotency_key,
            key_id=key_id,
            kind="asr",
            provider=provider,
            engine=engine,
            unit_price_uomcu=unit,
            cost_uomcu=asr_cost_from_unit(unit, audio_ms),
            audio_ms=audio_ms,
            received_ms=received_ms,
        )

    @classmethod
    def tts(
        cls,
        prices: PriceTable,
        *,
        idempotency_key: str,
        key_id: str,
        provider: str,
        engine: str,
        characters: int,
        unit_price_uomcu: int | None = None,
        upstream_characters: int | None = None,
    ) -> UsageIn:
        """A TTS usage of ``characters`` billed characters on route ``provider``,
        at the route's price unless ``unit_price_uomcu`` overrides it (the fee
        for requests that bring the caller's own upstream key)."""
        unit = prices.tts_unit_price(provider) if unit_price_uomcu is None else unit_price_uomcu
        check_int(characters, "characters")
        return cls(
            idempotency_key=idempotency_key,
            key_id=key_id,
            kind="tts",
            provider=provider,
            engine=engine,
            unit_price_uomcu=unit,
            cost_uomcu=tts_cost_from_unit(unit, characters),
            characters=characters,
            upstream_characters=upstream_characters,
        )

    @classmethod
    def llm(
        cls,
        prices: PriceTable,
        *,
        idempotency_key: str,
        key_id: str,
        provider: str,
        engine: str,
        model: str,
        input_tokens: int,
        output_tokens: int,
        estimated: bool,
        free: bool = False,
    ) -> UsageIn:
        """An LLM usage of ``model`` on route ``provider``, priced by the
        longest price-table prefix of ``model`` (:class:`ValueError` if none
        matches), or at 0 when ``free`` (a local provider)."""
        units = (0, 0) if free else prices.llm_unit_prices(model)
        if units is None:
            raise ValueError(f"no LLM price for model {model!r}")
        check_int(input_tokens, "input_tokens", maximum=MAX_TOKENS)
        check_int(output_tokens, "output_tokens", maximum=MAX_TOKENS)
        return cls(
            idempotency_key=idempotency_key,
            key_id=key_id,
            kind="llm",
            provider=provider,
            engine=engine,
            unit_price_uomcu=units[0],
            cost_uomcu=llm_cost_from_unit(units[0], units[1], input_tokens, output_tokens),
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            output_unit_price_uomcu=units[1],
            estimated=estimated,
        )


@dataclass(frozen=True)
class UsageRecord:
    """A stored usage record."""

    id: int
    idempotency_key: str
    key_id: str
    account_id: str
    kind: Kind
    provider: str
    engine: str
    audio_ms: int | None
    received_ms: int | None
    characters: int | None
    unit_price_uomcu: int
    cost_uomcu: int
    created: str
    upstream_characters: int | None = None
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    output_unit_price_uomcu: int | None = None
    estimated: bool | None = None

    @property
    def unit(self) -> str:
        return {"asr": "second", "tts": "character"}.get(self.kind, "token")

    @property
    def quantity(self) -> Decimal | int:
        """Seconds (exact Decimal, ms precision) for ASR, characters for TTS,
        input plus output tokens for LLM."""
        if self.kind == "asr":
            assert self.audio_ms is not None
            return Decimal(self.audio_ms).scaleb(-3)
        if self.kind == "llm":
            assert self.input_tokens is not None and self.output_tokens is not None
            return self.input_tokens + self.output_tokens
        assert self.characters is not None
        return self.characters

    @property
    def received_seconds(self) -> Decimal | None:
        return None if self.received_ms is None else Decimal(self.received_ms).scaleb(-3)

    @property
    def cost(self) -> Decimal:
        """Cost in OMCU, exact."""
        return Decimal(self.cost_uomcu).scaleb(-6)

    def same_event(self, u: UsageIn) -> bool:
        """Whether ``u`` describes the same event as this record (every field of ``u`` is equal)."""
        return all(getattr(self, field.name) == getattr(u, field.name) for field in fields(u))

    def to_json(self) -> dict[str, Any]:
        """The public JSON shape of a usage record.

        ``quantity`` is float seconds (millisecond precision) for ASR, int
        characters for TTS and int tokens (input + output) for LLM; ``cost``
        is float OMCU for display while ``cost_uomcu`` is the exact integer
        that was debited. LLM records add ``model``, ``input_tokens``,
        ``output_tokens``, ``output_unit_price_uomcu`` (``unit_price_uomcu``
        is then the input price, both per million tokens) and ``estimated``.
        """
        quantity: float | int
        if self.kind == "asr":
            assert self.audio_ms is not None
            quantity = self.audio_ms / 1000
        else:
            quantity = int(self.quantity)
        out: dict[str, Any] = {
            "id": self.id,
            "idempotency_key": self.idempotency_key,
            "key_id": self.key_id,
            "account_id": self.account_id,
            "kind": self.kind,
            "provider": self.provider,
            "engine": self.engine,
            "quantity": quantity,
            "unit": self.unit,
            "unit_price_uomcu": self.unit_price_uomcu,
            "cost": _micro_to_float(self.cost_uomcu),
            "cost_uomcu": self.cost_uomcu,
            "received_seconds": None if self.received_ms is None else self.received_ms / 1000,
            "upstream_characters": self.upstream_characters,
            "created": self.created,
        }
        if self.kind == "llm":
            out.update(
                model=self.model,
                input_tokens=self.input_tokens,
                output_tokens=self.output_tokens,
                output_unit_price_uomcu=self.output_unit_price_uomcu,
                estimated=self.estimated,
            )
        return out


@dataclass(frozen=True)
class DailyUsage:
    """One account's usage of one kind on one UTC day, summed (:meth:`~speech.metering.ledger.Ledger.usage_by_day`).

    ``audio_ms`` is the ASR total and ``characters`` the TTS total; a kind
    that has neither (one added later) has both ``None`` and still its cost.
    """

    day: str  # YYYY-MM-DD, UTC
    kind: str
    records: int
    audio_ms: int | None
    characters: int | None
    cost_uomcu: int

    def to_json(self) -> dict[str, Any]:
        quantity: float | int | None = None
        unit: str | None = None
        if self.audio_ms is not None:
            quantity, unit = self.audio_ms / 1000, "second"
        elif self.characters is not None:
            quantity, unit = self.characters, "character"
        return {
            "day": self.day,
            "kind": self.kind,
            "records": self.records,
            "quantity": quantity,
            "unit": unit,
            "cost": _micro_to_float(self.cost_uomcu),
            "cost_uomcu": self.cost_uomcu,
        }


__all__ = ["Account", "ApiKey", "DailyUsage", "UsageIn", "UsageRecord"]
