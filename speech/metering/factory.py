"""Open the ledger a target string names: a PostgreSQL URL or an SQLite path."""

from __future__ import annotations

import re
from urllib.parse import unquote

from speech.errors import ConfigError
from speech.metering.ledger import Clock, Ledger

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
REDACTED = "***"

_QUERY_SECRET = re.compile(r"(?i)([?&](?:password|sslpassword)=)[^&#]*")


def is_postgres_url(target: str) -> bool:
    """Whether ``target`` is a ``postgresql://`` / ``postgres://`` URL."""
    return target.strip().lower().startswith(POSTGRES_SCHEMES)


def _userinfo_password(target: str) -> str | None:
    scheme_end = target.find("://")
    if scheme_end < 0:
        return None
    rest = target[scheme_end + 3 :]
    at = rest.rfind("@")
    if at < 0:
        return None
    userinfo = rest[:at]
    if ":" not in userinfo:
        return None
    return userinfo.split(":", 1)[1]


def redact_target(target: str) -> str:
    """``target`` fit for logs and messages: a URL's password (in the user
    info or a ``password=`` parameter) becomes ``***``. Paths pass unchanged."""
    if not is_postgres_url(target):
        return target
    shown = target.strip()
    scheme_end = shown.find("://") + 3
    rest = shown[scheme_end:]
    at = rest.rfind("@")
    if at >= 0:
        userinfo, host = rest[:at], rest[at + 1 :]
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":" + REDACTED
        rest = f"{userinfo}@{host}"
    return _QUERY_SECRET.sub(lambda m: m.group(1) + REDACTED, shown[:scheme_end] + rest)


def scrub_secrets(text: str, target: str) -> str:
    """``text`` with every password found in ``target`` replaced by ``***``."""
    secrets_: set[str] = set()
    password = _userinfo_password(target)
    if password:
        secrets_ |= {password, unquote(password)}
    for match in _QUERY_SECRET.finditer(target):
        value = target[match.end(1) : match.end()]
        if value:
            secrets_ |= {value, unquote(value)}
    text = text.replace(target, redact_target(target))
    for secret in sorted(secrets_, key=len, reverse=True):
        if secret:
            text = text.replace(secret, REDACTED)
    return text


async def open_ledger(target: str, *, clock: Clock | None = None) -> Ledger:
    """Open (and migrate) the ledger at ``target``.

    ``postgresql://...`` or ``postgres://...`` opens a
    :class:`~speech.metering.postgres.PostgresLedger` (a pool of 1-10
    connections); anything else is an SQLite file path for
    :class:`~speech.metering.sqlite.SqliteLedger`. Raises
    :class:`~speech.errors.ConfigError` with a clear message, never showing a
    password from the URL, if the ledger cannot be opened.
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


__all__ = ["is_postgres_url", "open_ledger", "redact_target", "scrub_secrets"]
