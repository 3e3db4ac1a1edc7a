"""The ledger interface: accounts, API keys, balances, reservations, limits and usage.

:class:`Ledger` is the interface the rest of the gateway uses. Two backends
implement it with identical semantics (one shared test suite runs against
both):

* :class:`~speech.metering.sqlite.SqliteLedger`: one SQLite file through
  :mod:`aiosqlite`, the embedded default for a single gateway process;
* :class:`~speech.metering.postgres.PostgresLedger`: PostgreSQL through
  :mod:`asyncpg`, shared by several gateway replicas.

:func:`speech.metering.factory.open_ledger` picks one from a target string.

Money lives on :class:`~speech.metering.records.Account` rows;
:class:`~speech.metering.records.ApiKey` rows belong to an account. Money is
integer µOMCU throughout (see :mod:`speech.metering.prices`) and only changes
in the same transaction as the usage insert or top-up that explains it.
Timestamps are those of :mod:`speech.metering.timestamps`.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Collection
from datetime import datetime
from types import TracebackType
from typing import Self

from speech.errors import AuthError
from speech.metering import keys as keymod
from speech.metering.checks import Kind
from speech.metering.records import Account, ApiKey, DailyUsage, UsageIn, UsageRecord


class _Unset(enum.Enum):
    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset.UNSET
"""Sentinel for :meth:`Ledger.update_key`: leave this field as it is."""


class Ledger(abc.ABC):
    """Storage of accounts, API keys, money, limits and usage. All methods are coroutines.

    Implementations are opened by an async class method (``open``) or by
    :func:`speech.metering.factory.open_ledger`, and must be closed with
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


__all__ = ["UNSET", "Ledger"]
