"""The ledger: accounts, API keys, balances, reservations, limits and usage.

:class:`Ledger` is the interface the rest of the gateway uses. Two backends
implement it with identical semantics (one shared test suite runs against
both):

* :class:`~speech.metering.sqlite.SqliteLedger`: one SQLite file through
  :mod:`aiosqlite`, the embedded default for a single gateway process;
* :class:`~speech.metering.postgres.PostgresLedger`: PostgreSQL through
  :mod:`asyncpg`, shared by several gateway replicas.

:func:`speech.metering.open_ledger` picks one from a target string.

Money lives on :class:`Account` rows; :class:`ApiKey` rows belong to an
account. Money is integer µOMCU throughout (see :mod:`speech.metering.prices`)
and only changes in the same transaction as the usage insert or top-up that
explains it. Timestamps are ISO-8601 UTC text with millisecond precision and
a ``Z`` in both backends (fixed width, so they sort chronologically as text).
"""

from __future__ import annotations

import abc
import enum
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

from speech.errors import AuthError
from speech.metering import keys as keymod
from speech.metering.prices import (
    MAX_UOMCU,
    MICRO,
    PriceTable,
    asr_cost_from_unit,
    llm_cost_from_unit,
    tts_cost_from_unit,
)

if TYPE_CHECKING:  # pragma: no cover
    from speech.metering.postgres import PostgresLedger
    from speech.metering.sqlite import SqliteLedger

log = logging.getLogger(__name__)

Kind = Literal["asr", "tts", "llm"]
KINDS = ("asr", "tts", "llm")
KINDS_TEXT = "'asr', 'tts' or 'llm'"

MAX_NAME_LENGTH = 100
MAX_IDEMPOTENCY_KEY_LENGTH = 200
MAX_ID_LENGTH = 200  # reservation / lease ids chosen by the caller
MAX_LABEL_LENGTH = 64  # provider / engine / replica names
MAX_MODEL_LENGTH = 200  # llm: the model name as the client sent it
MAX_TOKENS = 10**12
MAX_USAGE_LIMIT = 10_000
MIN_BALANCE_UOMCU = -(10**12)
"""Lowest balance a (negative) correction through :meth:`Ledger.top_up` may leave."""
MAX_TTL_S = 86_400.0
MAX_STREAMS_LIMIT = 1_000_000
MAX_RPM_LIMIT = 1_000_000_000
ACCOUNT_PREFIX = "acct_"

Clock = Callable[[], datetime]


class _Unset(enum.Enum):
    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset.UNSET
"""Sentinel for :meth:`Ledger.update_key`: leave this field as it is."""


# ---------------------------------------------------------------- helpers


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_timestamp(dt: datetime) -> str:
    """ISO-8601 UTC with millisecond precision and ``Z``: ``2025-01-31T12:00:00.123Z``.

    A naive datetime is taken to be UTC.
    """
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt.isoformat(timespec="milliseconds") + "Z"


def parse_timestamp(value: str | datetime) -> str:
    """Normalise an ISO-8601 time (or datetime) to the ledger's stored format.

    Offsets are converted to UTC; a time without an offset is taken as UTC.
    Raises :class:`ValueError` for text that is not an ISO-8601 time.
    """
    if isinstance(value, datetime):
        return format_timestamp(value)
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError(f"not an ISO-8601 time: {str(value)[:64]!r}")
    try:
        dt = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"not an ISO-8601 time: {value!r}") from None
    return format_timestamp(dt)


def _micro_to_float(micro: int) -> float:
    # Correctly rounded: int / int in Python is exact-then-rounded.
    return micro / MICRO


def check_int(value: Any, what: str, *, minimum: int = 0, maximum: int = MAX_UOMCU) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{what} must be between {minimum} and {maximum}, got {value}")
    return value


def check_label(value: Any, what: str, maximum: int) -> str:
    if not isinstance(value, str) or not value or len(value) > maximum:
        raise ValueError(f"{what} must be a non-empty string of at most {maximum} characters")
    if not value.isprintable():
        raise ValueError(f"{what} must not contain control characters")
    return value


def check_name(name: Any, what: str = "name") -> str:
    if not isinstance(name, str):
        raise ValueError(f"{what} must be a string")
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"{what} must be 1 to {MAX_NAME_LENGTH} characters")
    if not name.isprintable():
        raise ValueError(f"{what} must not contain control characters")
    return name


def check_ttl(ttl_s: Any) -> float:
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError(f"ttl_s must be a number of seconds in (0, {MAX_TTL_S:g}], got {ttl_s!r}")
    return float(ttl_s)


def check_ids(ids: Any, what: str) -> list[str]:
    if isinstance(ids, str):
        raise ValueError(f"{what} must be a collection of ids, not one string")
    return sorted({check_label(i, what, MAX_ID_LENGTH) for i in ids})


# ---------------------------------------------------------------- records


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
    :meth:`Ledger.acquire_stream` and :meth:`Ledger.count_request`).
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
    """One billable event, as callers hand it to :meth:`Ledger.record_usage`.

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
        if self.kind not in KINDS:
            raise ValueError(f"kind must be {KINDS_TEXT}, got {self.kind!r}")
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
        """Whether ``u`` describes the same event as this record."""
        return (
            self.idempotency_key == u.idempotency_key
            and self.key_id == u.key_id
            and self.kind == u.kind
            and self.provider == u.provider
            and self.engine == u.engine
            and self.audio_ms == u.audio_ms
            and self.received_ms == u.received_ms
            and self.characters == u.characters
            and self.upstream_characters == u.upstream_characters
            and self.unit_price_uomcu == u.unit_price_uomcu
            and self.cost_uomcu == u.cost_uomcu
            and self.model == u.model
            and self.input_tokens == u.input_tokens
            and self.output_tokens == u.output_tokens
            and self.output_unit_price_uomcu == u.output_unit_price_uomcu
            and self.estimated == u.estimated
        )

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
    """One account's usage of one kind on one UTC day, summed (:meth:`Ledger.usage_by_day`).

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


# ---------------------------------------------------------------- interface


class Ledger(abc.ABC):
    """Storage of accounts, API keys, money, limits and usage. All methods are coroutines.

    Implementations are opened by an async class method (``open``) or by
    :func:`speech.metering.open_ledger`, and must be closed with
    :meth:`close` (or used as ``async with``).

    Write transactions are *shielded*: once started, a write runs to its end
    even if the awaiting task is cancelled (a client hanging up just as its
    last utterance is billed), and :meth:`close` waits for it. Work that was
    done is therefore never lost, and a write is applied completely or not
    at all.
    """

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish pending writes and release the database."""

    # ------------------------------------------------------------ accounts

    @abc.abstractmethod
    async def create_account(self, name: str, balance_uomcu: int) -> Account:
        """A new account ``acct_<12 hex>``. The name is stripped and must be
        1-100 printable characters; the balance an integer in 0..10^18.
        Raises :class:`ValueError` otherwise."""

    @abc.abstractmethod
    async def get_account(self, account_id: str) -> Account | None:
        """The account, or ``None``."""

    @abc.abstractmethod
    async def list_accounts(self) -> list[Account]:
        """Every account, oldest first."""

    @abc.abstractmethod
    async def top_up(self, account_id: str, amount_uomcu: int) -> int | None:
        """Add ``amount_uomcu`` (non-zero; negative for a correction) to the
        account's balance; returns the new balance, ``None`` if the account
        is unknown. Raises :class:`ValueError` if the balance would leave
        ``-10**12 .. 10**18`` µOMCU."""

    # ------------------------------------------------------------ keys

    @abc.abstractmethod
    async def create_key(
        self,
        name: str,
        balance_uomcu: int | None = None,
        *,
        account_id: str | None = None,
        expires: str | datetime | None = None,
        max_streams: int | None = None,
        rpm: int | None = None,
    ) -> tuple[str, ApiKey]:
        """Create a key; returns ``(secret key, ApiKey)``.

        Without ``account_id`` a new account named ``name`` holding
        ``balance_uomcu`` (required) is created for the key, in the same
        transaction; with ``account_id`` the key joins that account and
        ``balance_uomcu`` must be ``None``. The secret is returned this once;
        only its hash is stored. Raises :class:`ValueError` for a bad name,
        balance, limit, expiry or an unknown account.
        """

    @abc.abstractmethod
    async def _lookup(self, key_id: str) -> tuple[ApiKey, str] | None:
        """The key and its stored hash, or ``None``."""

    @abc.abstractmethod
    def _now(self) -> str:
        """The ledger clock's current time, formatted."""

    async def authenticate(self, key: str | None) -> ApiKey:
        """The active key matching ``key``, else :class:`~speech.errors.AuthError`.

        Messages: ``"missing API key"`` for an absent or empty key;
        ``"invalid API key"`` for a malformed, unknown or wrong key (one text
        for all so the reply does not tell which); ``"API key revoked"`` /
        ``"API key expired"`` for a correct key that was revoked / has
        expired. The key itself never appears in a message.
        """
        if key is None or (isinstance(key, str) and not key.strip()):
            raise AuthError("missing API key")
        key_id = keymod.parse_key(key)
        if key_id is None:
            raise AuthError("invalid API key")
        found = await self._lookup(key_id)
        if found is None:
            raise AuthError("invalid API key")
        api_key, stored_hash = found
        if not keymod.verify(key, stored_hash):
            raise AuthError("invalid API key")
        if api_key.revoked is not None:
            raise AuthError("API key revoked")
        if api_key.expires is not None and api_key.expires <= self._now():
            raise AuthError("API key expired")
        return api_key

    @abc.abstractmethod
    async def get_key(self, key_id: str) -> ApiKey | None:
        """The key with this id (active or not), or ``None``."""

    @abc.abstractmethod
    async def list_keys(self, account_id: str | None = None) -> list[ApiKey]:
        """Every key (of one account if given), revoked ones included, oldest first."""

    @abc.abstractmethod
    async def revoke(self, key_id: str, *, account_id: str | None = None) -> bool:
        """Revoke a key (only if it belongs to ``account_id`` when given);
        ``False`` if it is unknown, in another account or already revoked."""

    @abc.abstractmethod
    async def update_key(
        self,
        key_id: str,
        *,
        expires: str | datetime | None | _Unset = UNSET,
        max_streams: int | None | _Unset = UNSET,
        rpm: int | None | _Unset = UNSET,
    ) -> ApiKey | None:
        """Change a key's expiry and limits: :data:`UNSET` leaves a field as
        it is, ``None`` removes it. Returns the key, ``None`` if unknown."""

    @abc.abstractmethod
    async def inactive_keys(self, key_ids: Collection[str]) -> set[str]:
        """Those of ``key_ids`` that are revoked, expired or unknown (one query)."""

    # ------------------------------------------------------------ money

    @abc.abstractmethod
    async def balance(self, account_id: str) -> int:
        """The account's balance in µOMCU; :class:`KeyError` if unknown."""

    @abc.abstractmethod
    async def available(self, account_id: str) -> int:
        """Balance less live (unexpired) reservations; :class:`KeyError` if unknown."""

    @abc.abstractmethod
    async def reserve(self, reservation_id: str, *, key_id: str, want_uomcu: int, ttl_s: float) -> int:
        """Hold credit of the key's account for work about to be done; returns the grant.

        One transaction, serialised per account across processes: expired
        reservations of the account are dropped; if ``available <= 0``
        :class:`~speech.errors.PaymentRequired` is raised, else
        ``min(want_uomcu, available)`` is granted (``want_uomcu`` 0 is
        allowed) for ``ttl_s`` seconds. The same ``reservation_id`` again
        returns the existing grant. :class:`ValueError` for an unknown key.
        """

    @abc.abstractmethod
    async def settle(self, reservation_id: str, usage: UsageIn | None) -> tuple[UsageRecord | None, bool]:
        """Drop the reservation and, if ``usage``, record it and debit its
        account, in one transaction. Returns what :meth:`record_usage` would
        (``(None, False)`` without usage). Works whether or not the
        reservation still exists (the work was done)."""

    @abc.abstractmethod
    async def release(self, reservation_id: str) -> None:
        """Drop a reservation without recording usage (no-op if absent)."""

    @abc.abstractmethod
    async def renew(self, reservation_ids: Collection[str], ttl_s: float) -> None:
        """Push the expiry of the live ones among ``reservation_ids`` to now + ``ttl_s``
        (never shortening it); expired ones stay expired."""

    @abc.abstractmethod
    async def expire_stale(self) -> int:
        """Delete expired reservations and stream leases and rate windows
        older than the previous minute; returns the number of rows removed."""

    @abc.abstractmethod
    async def record_usage(self, u: UsageIn) -> tuple[UsageRecord, bool]:
        """Store a usage record and debit its account, exactly once.

        In one transaction: insert the record (with the key's account) and
        subtract ``cost_uomcu`` from the account's balance. If a record with
        the same ``idempotency_key`` exists, nothing changes and that record
        is returned with ``False``; otherwise the new record with ``True``.

        The balance may go negative (work already done is always billed),
        and usage of a revoked or expired key is still recorded. Raises
        :class:`ValueError` if the key does not exist.
        """

    @abc.abstractmethod
    async def usage(
        self,
        *,
        account_id: str | None = None,
        key_id: str | None = None,
        kind: Kind | None = None,
        since: str | datetime | None = None,
        until: str | datetime | None = None,
        limit: int = 100,
    ) -> list[UsageRecord]:
        """Usage records, newest first, at most ``limit`` (1-10000).

        Filters combine: ``account_id``, ``key_id``, ``kind`` (``asr``,
        ``tts`` or ``llm``); ``since``
        (inclusive) and ``until`` (exclusive) are ISO-8601 (UTC if no offset)
        or datetimes.
        """

    @abc.abstractmethod
    async def usage_by_day(
        self, *, account_id: str, since: str | datetime, until: str | datetime | None = None
    ) -> list[DailyUsage]:
        """The account's usage summed per UTC day and kind, oldest day first,
        from ``since`` (inclusive) to ``until`` (exclusive; default: no end).
        Days without usage are absent. One grouped query, however many records."""

    # ------------------------------------------------------------ limits

    @abc.abstractmethod
    async def acquire_stream(self, lease_id: str, *, key_id: str, max_streams: int, ttl_s: float, replica: str) -> bool:
        """Take one of the key's ``max_streams`` concurrent-stream slots for
        ``ttl_s`` seconds; ``False`` when all are taken. Serialised per key
        across processes; expired leases are dropped first; the same
        ``lease_id`` again renews and returns ``True``. :class:`ValueError`
        for an unknown key."""

    @abc.abstractmethod
    async def renew_streams(self, lease_ids: Collection[str], ttl_s: float) -> None:
        """Push the expiry of the live ones among ``lease_ids`` to now + ``ttl_s``."""

    @abc.abstractmethod
    async def release_stream(self, lease_id: str) -> None:
        """Give a stream slot back (no-op if absent)."""

    @abc.abstractmethod
    async def count_request(self, key_id: str, *, rpm: int, now_epoch_s: float | None = None) -> tuple[bool, int]:
        """Count one request of the key in its fixed 60 s window (epoch
        minute); returns ``(count <= rpm, count)``. Every call counts,
        refused ones included."""


def __getattr__(name: str) -> Any:
    # ``from speech.metering.ledger import SqliteLedger`` keeps working; the
    # backends live in their own modules and import this one.
    if name == "SqliteLedger":
        from speech.metering.sqlite import SqliteLedger

        return SqliteLedger
    if name == "PostgresLedger":
        from speech.metering.postgres import PostgresLedger

        return PostgresLedger
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "UNSET",
    "Account",
    "ApiKey",
    "DailyUsage",
    "Kind",
    "Ledger",
    "PostgresLedger",
    "SqliteLedger",
    "UsageIn",
    "UsageRecord",
    "format_timestamp",
    "parse_timestamp",
]
