"""Accounts: the seed's API-key endpoints and the operator's admin API.

Seed (``../shared/PROTOCOLS.md`` A4), authenticated by any API key of the
account they act on:

* ``POST /api/core/api_keys/create`` ``{"name", "expires"?, "max_streams"?, "rpm"?}``
  -> a new key of the same account, shown once;
* ``POST /api/core/api_keys/delete`` ``{"key_id"}`` -> revokes a key of the account;
* ``GET /api/core/api_keys`` -> the account's keys (never their secrets).

Admin, authenticated by ``Authorization: Bearer <admin.token>`` (there is no
default token; without one the admin API answers 503):

* ``POST /api/admin/accounts`` ``{"name", "balance"}`` -> account and its first key;
* ``GET /api/admin/accounts``; ``POST /api/admin/accounts/{id}/top_up`` ``{"amount"}``;
* ``GET /api/admin/keys`` (every key, or one account's with ``?account_id=``);
* ``POST /api/admin/accounts/{id}/keys`` ``{"name", "expires"?, "max_streams"?, "rpm"?}``;
* ``PATCH /api/admin/keys/{key_id}`` ``{"expires"?, "max_streams"?, "rpm"?}`` (null removes a limit);
* ``POST /api/admin/keys/{key_id}/revoke``;
* ``GET /api/admin/usage`` with the same filters as the account's usage, plus ``account_id``.

Amounts are OMCU as JSON numbers or decimal strings (at most 6 decimals).
"""

from __future__ import annotations

import hmac
import json
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from speech.api.auth import extract_key
from speech.api.gateway import Gateway
from speech.api.usage_export import usage_response
from speech.errors import AuthError, BadRequest, EngineUnavailable, NotFound
from speech.metering.ledger import UNSET
from speech.metering.prices import format_omcu, parse_omcu
from speech.metering.records import ApiKey

MAX_BODY = 64 * 1024


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise BadRequest(f"request body is over {MAX_BODY} bytes")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BadRequest("Invalid JSON") from exc
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def _name(body: dict[str, Any], default: str | None = None) -> str:
    name = body.get("name", default)
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        raise BadRequest("'name' must be a non-empty string of at most 100 characters")
    return name.strip()


def _limits(body: dict[str, Any], *, partial: bool) -> dict[str, Any]:
    """expires / max_streams / rpm from a body; absent = UNSET when partial."""
    out: dict[str, Any] = {}
    for field in ("expires", "max_streams", "rpm"):
        if field not in body:
            if partial:
                out[field] = UNSET
            else:
                out[field] = None
            continue
        value = body[field]
        if value is None:
            out[field] = None
        elif field == "expires":
            if not isinstance(value, str) or len(value) > 64:
                raise BadRequest("'expires' must be an ISO-8601 time such as 2027-01-31T00:00:00Z, or null")
            out[field] = value
        else:
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
                raise BadRequest(f"'{field}' must be an integer between 1 and 1000000, or null")
            out[field] = value
    return out


def _amount(body: dict[str, Any], field: str, *, allow_negative: bool = False) -> int:
    value = body.get(field)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadRequest(f"'{field}' must be an amount of OMCU, e.g. 100 or \"2.5\"")
    text = str(value) if not isinstance(value, float) else repr(value)
    negative = text.strip().startswith("-")
    if negative and not allow_negative:
        raise BadRequest(f"'{field}' must not be negative")
    try:
        micro = parse_omcu(text.strip().lstrip("-"))
    except ValueError as exc:
        raise BadRequest(f"'{field}': {exc}") from exc
    return -micro if negative else micro


def key_json(key: ApiKey, secret: str | None = None) -> dict[str, Any]:
    out = key.to_json()
    if secret is not None:
        out["api_key"] = secret  # shown once, at creation
    return out


# ----------------------------------------------------------------- seed API


async def _caller(request: Request) -> tuple[Gateway, ApiKey]:
    gateway: Gateway = request.app.state.gateway
    return gateway, await gateway.authenticate(extract_key(request.headers, request.query_params))


async def create_key(request: Request) -> JSONResponse:
    gateway, caller = await _caller(request)
    body = await _body(request)
    limits = _limits(body, partial=False)
    try:
        secret, key = await gateway.ledger.create_key(_name(body, "api key"), account_id=caller.account_id, **limits)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    return JSONResponse(key_json(key, secret))


async def delete_key(request: Request) -> JSONResponse:
    gateway, caller = await _caller(request)
    body = await _body(request)
    key_id = body.get("key_id")
    if not isinstance(key_id, str) or not key_id:
        raise BadRequest("'key_id' is required")
    if not await gateway.ledger.revoke(key_id, account_id=caller.account_id):
        raise NotFound(f"no active API key {key_id[:40]!r} in this account")
    return JSONResponse({"deleted": key_id})


async def list_keys(request: Request) -> JSONResponse:
    gateway, caller = await _caller(request)
    keys = await gateway.ledger.list_keys(caller.account_id)
    return JSONResponse({"account_id": caller.account_id, "api_keys": [key_json(k) for k in keys]})


# ---------------------------------------------------------------- admin API


def _require_admin(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    token = gateway.settings.admin.token
    if not token:
        raise EngineUnavailable("admin API not configured: set admin.token (SPEECH_ADMIN__TOKEN or a token file)")
    auth = request.headers.get("authorization", "")
    scheme, _, given = auth.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.get().encode()):
        raise AuthError("invalid admin credential")
    return gateway


def _account_json(account: Any) -> dict[str, Any]:
    return {
        "account_id": account.account_id,
        "name": account.name,
        "balance": float(Decimal(account.balance_uomcu).scaleb(-6)),
        "balance_omcu": format_omcu(account.balance_uomcu),
        "balance_uomcu": account.balance_uomcu,
        "created": account.created,
    }


async def admin_create_account(request: Request) -> JSONResponse:
    gateway = _require_admin(request)
    body = await _body(request)
    balance = _amount(body, "balance") if "balance" in body else 0
    name = _name(body)
    account = await gateway.ledger.create_account(name, balance)
    secret, key = await gateway.ledger.create_key(name, account_id=account.account_id)
    return JSONResponse({"account": _account_json(account), "key": key_json(key, secret)})


async def admin_list_accounts(request: Request) -> JSONResponse:
    gateway = _require_admin(request)
    return JSONResponse({"accounts": [_account_json(a) for a in await gateway.ledger.list_accounts()]})


async def admin_list_keys(request: Request) -> JSONResponse:
    """Every key (of one account with ``?account_id=``), revoked ones included."""
    gateway = _require_admin(request)
    keys = await gateway.ledger.list_keys(request.query_params.get("account_id") or None)
    return JSONResponse({"api_keys": [key_json(k) for k in keys]})


async def admin_top_up(request: Request) -> JSONResponse:
    gateway = _require_admin(request)
    account_id = request.path_params["account_id"]
    amount = _amount(await _body(request), "amount", allow_negative=True)
    new = await gateway.ledger.top_up(account_id, amount)
    if new is None:
        raise NotFound(f"no account {account_id[:40]!r}")
    return JSONResponse({"account_id": account_id, "balance_omcu": format_omcu(new), "balance_uomcu": new})


async def admin_create_key(request: Request) -> JSONResponse:
    gateway = _require_admin(request)
    account_id = request.path_params["account_id"]
    if await gateway.ledger.get_account(account_id) is None:
        raise NotFound(f"no account {account_id[:40]!r}")
    body = await _body(request)
    try:
        secret, key = await gateway.ledger.create_key(
            _name(body, "api key"), account_id=account_id, **_limits(body, partial=False)
        )
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    return JSONResponse(key_json(key, secret))


async def admin_update_key(request: Request) -> JSONResponse:
    gateway = _require_admin(request)
    key_id = request.path_params["key_id"]
    try:
        key = await gateway.ledger.update_key(key_id, **_limits(await _body(request), partial=True))
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    if key is None:
        raise NotFound(f"no API key {key_id[:40]!r}")
    return JSONResponse(key_json(key))


async def admin_revoke_key(request: Request) -> JSONResponse:
    gateway = _require_admin(request)
    key_id = request.path_params["key_id"]
    if not await gateway.ledger.revoke(key_id):
        raise NotFound(f"no active API key {key_id[:40]!r}")
    return JSONResponse({"revoked": key_id})


async def admin_usage(request: Request) -> Response:
    gateway = _require_admin(request)
    return await usage_response(gateway, request, account_id=request.query_params.get("account_id") or None)
