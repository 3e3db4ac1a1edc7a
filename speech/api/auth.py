"""Where a caller's API key comes from: ``x-api-key``, ``Authorization:
Bearer`` or ``?api_key=`` (browsers cannot set headers on websockets)."""

from __future__ import annotations

from starlette.datastructures import Headers, QueryParams


def extract_key(headers: Headers, query: QueryParams) -> str:
    """The key as sent, or "" when none was sent. Headers win over the query."""
    key = headers.get("x-api-key", "").strip()
    if key:
        return key
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return query.get("api_key", "").strip()
