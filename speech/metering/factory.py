"""Open the ledger a target string names: a PostgreSQL URL or an SQLite path."""

from __future__ import annotations

from speech.errors import ConfigError
from speech.metering.dsn import is_postgres_url, redact_target
from speech.metering.ledger import Ledger
from speech.metering.timestamps import Clock


async def open_ledger(target: str, *, clock: Clock | None = None) -> Ledger:
    """Open (and migrate) the ledger at ``target``.

    ``postgresql://...`` or ``postgres://...`` opens a
    :class:`~speech.metering.postgres.PostgresLedger` (a pool of 1-10
    connections); anything else is an SQLite file path for
    :class:`~speech.metering.sqlite.SqliteLedger`. Raises
    :class:`~speech.errors.ConfigError` with a clear message, never showing a
    password from the URL, if the ledger cannot be opened.

    The backends are imported here, on first use: asyncpg is only needed
    for PostgreSQL.
    """
    if not isinstance(target, str) or not target.strip():
        raise ConfigError("the ledger database is not set: give a file path or a postgresql:// URL")
    if is_postgres_url(target):
        try:
            from speech.metering.postgres import PostgresLedger
        except ImportError as exc:
            raise ConfigError(
                f"cannot open PostgreSQL ledger {redact_target(target)}: the asyncpg package is not installed "
                f"({exc.name or exc})"
            ) from None
        return await PostgresLedger.open(target.strip(), clock=clock)
    from speech.metering.sqlite import SqliteLedger

    return await SqliteLedger.open(target, clock=clock)


__all__ = ["open_ledger"]
