"""Account endpoints: the caller's balance and usage history."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from speech.api.auth import extract_key
from speech.api.gateway import Gateway
from speech.api.usage_export import usage_response
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


async def usage(request: Request) -> Response:
    """The account's usage (every key of it), filtered and as JSON or CSV."""
    gateway, account = await _account(request)
    return await usage_response(gateway, request, account_id=account.account_id)
