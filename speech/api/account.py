"""Account endpoints: the caller's balance and usage history.

``GET /api/core/account/usage/daily?days=30`` sums the account's usage per
UTC day and kind in the ledger (one grouped query), so a chart of a busy
account is exact however many records it has; ``days`` is 1-366 and counts
today."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from speech.api.auth import extract_key
from speech.api.gateway import Gateway
from speech.api.usage_export import usage_response
from speech.errors import BadRequest
from speech.metering.prices import format_omcu
from speech.metering.records import ApiKey


async def _account(request: Request) -> tuple[Gateway, ApiKey]:
    gateway: Gateway = request.app.state.gateway
    key = extract_key(request.headers, request.query_params)
    return gateway, await gateway.authenticate(key)


async def balance(request: Request) -> JSONResponse:
    gateway, account = await _account(request)
    micro = await gateway.ledger.balance(account.account_id)
    return JSONResponse(
        {
            "key_id": account.key_id,
            "account_id": account.account_id,
            "name": account.name,
            "balance": float(format_omcu(micro)),
            "balance_omcu": format_omcu(micro),
            "balance_uomcu": micro,
        }
    )


async def usage(request: Request) -> Response:
    """The account's usage (every key of it), filtered and as JSON or CSV."""
    gateway, account = await _account(request)
    return await usage_response(gateway, request, account_id=account.account_id)


MAX_DAYS = 366


async def usage_daily(request: Request) -> JSONResponse:
    """The account's usage per UTC day and kind over the last ``days`` days
    (today included); days without usage are left out."""
    gateway, account = await _account(request)
    raw = request.query_params.get("days", "30")
    days = int(raw) if raw.isdigit() and len(raw) <= 4 else 0
    if not 1 <= days <= MAX_DAYS:
        raise BadRequest(f"'days' must be an integer between 1 and {MAX_DAYS}")
    today = datetime.now(UTC).date()
    first = today - timedelta(days=days - 1)
    rows = await gateway.ledger.usage_by_day(account_id=account.account_id, since=first.isoformat() + "T00:00:00Z")
    return JSONResponse(
        {
            "account_id": account.account_id,
            "first_day": first.isoformat(),
            "last_day": today.isoformat(),
            "daily": [r.to_json() for r in rows],
        }
    )
