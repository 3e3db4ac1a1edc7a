"""What the ledger accepts: usage kinds, size limits and the validators.

Every validator raises :class:`ValueError` with a message naming the field
(``what``) and the rule it broke; the ledger's methods and records call
them before anything touches the database.
"""

from __future__ import annotations

from typing import Any, Literal

from speech.metering.prices import MAX_UOMCU

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
"""Lowest balance a (negative) correction through :meth:`~speech.metering.ledger.Ledger.top_up` may leave."""
MAX_TTL_S = 86_400.0
MAX_STREAMS_LIMIT = 1_000_000
MAX_RPM_LIMIT = 1_000_000_000


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


def check_kind(kind: Any) -> Kind:
    if kind not in KINDS:
        raise ValueError(f"kind must be {KINDS_TEXT}, got {kind!r}")
    return kind


__all__ = [
    "KINDS",
    "KINDS_TEXT",
    "MAX_ID_LENGTH",
    "MAX_IDEMPOTENCY_KEY_LENGTH",
    "MAX_LABEL_LENGTH",
    "MAX_MODEL_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_RPM_LIMIT",
    "MAX_STREAMS_LIMIT",
    "MAX_TOKENS",
    "MAX_TTL_S",
    "MAX_USAGE_LIMIT",
    "MIN_BALANCE_UOMCU",
    "Kind",
    "check_ids",
    "check_int",
    "check_kind",
    "check_label",
    "check_name",
    "check_ttl",
]
