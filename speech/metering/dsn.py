"""Ledger targets: tell a PostgreSQL URL from an SQLite path, and keep its password out of logs."""

from __future__ import annotations

import re
from urllib.parse import unquote

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


__all__ = ["is_postgres_url", "redact_target", "scrub_secrets"]
