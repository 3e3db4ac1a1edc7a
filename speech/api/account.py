"""Account endpoints: the caller's balance and usage history."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from speech.api.auth import extract_key
from speech.api.gateway import Gateway
from speech.errors import BadRequest
from speech.metering.ledger import ApiKey
from speech.metering.prices import format_omcu


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


async def usage(request: Request) -> JSONResponse:
    gateway, account = await _account(request)
    raw_limit = request.query_params.get("limit", "100")
    try:
        limit = int(raw_limit)
    except ValueError:
        limit = 0
    if not 1 <= limit <= 1000:
        raise BadRequest("'limit' must be an integer between 1 and 1000")
    since = request.query_params.get("since") or None
    try:
        records = await gateway.ledger.usage(key_id=account.key_id, limit=limit, since=since)
    except ValueError as exc:
        raise BadRequest("'since' must be an ISO-8601 time such as 2026-01-31T12:00:00Z") from exc
    return JSONResponse(
        {"key_id": account.key_id, "account_id": account.account_id, "usage": [r.to_json() for r in records]}
    )
