"""Accounts, API keys, prices and the ledger.

``open_ledger(target)`` opens a :class:`Ledger`: a PostgreSQL URL gives a
:class:`~speech.metering.postgres.PostgresLedger` (several gateway replicas
share one database), anything else an SQLite file
(:class:`~speech.metering.sqlite.SqliteLedger`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from speech.metering.factory import open_ledger, redact_target
from speech.metering.ledger import UNSET, Account, ApiKey, Ledger, UsageIn, UsageRecord

if TYPE_CHECKING:  # pragma: no cover
    from speech.metering.postgres import PostgresLedger
    from speech.metering.sqlite import SqliteLedger


def __getattr__(name: str) -> Any:
    # Backends load on first use: asyncpg is only needed for PostgreSQL.
    if name in ("SqliteLedger", "PostgresLedger"):
        from speech.metering import ledger

        return getattr(ledger, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "UNSET",
    "Account",
    "ApiKey",
    "Ledger",
    "PostgresLedger",
    "SqliteLedger",
    "UsageIn",
    "UsageRecord",
    "open_ledger",
    "redact_target",
]
