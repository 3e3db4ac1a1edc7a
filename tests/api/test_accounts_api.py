"""The seed's api_keys endpoints, the admin API, usage history, and per-key
limits (expiry, requests per minute, concurrent streams, revocation)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from typing import Any

import httpx
import pytest
import websockets

from speech.errors import CLOSE_LIMIT, CLOSE_UNAUTHORIZED
from tests.api.streaming import errors, om1_frames, stream
from tests.conftest import SAMPLES, read_wav

ADMIN = "admin-token-0123456789abcdef"
QUIET = json.dumps({"audio": "AAAA" * 800})  # 2400 bytes of silence


@pytest.fixture
def server(make_server: Any) -> Any:
    return make_server({"admin.token": ADMIN, "limits.revocation_poll_s": 0.2})


def client(server: Any, key: str | None = None, admin: bool = False) -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {ADMIN}"} if admin else ({"x-api-key": key} if key else {})
    return httpx.AsyncClient(base_url=server.http, headers=headers, timeout=60)


async def test_seed_api_keys_create_list_delete(server: Any) -> None:
    key = await server.create_key("owner", balance_uomcu=5_000_000)
    async with client(server, key) as c:
        r = await c.post("/api/core/api_keys/create", json={"name": "robot-2", "rpm": 30})
        assert r.status_code == 200
        new = r.json()
        assert new["api_key"].startswith("sk_") and new["name"] == "robot-2" and new["rpm"] == 30
        listed = (await c.get("/api/core/api_keys")).json()
        assert {k["name"] for k in listed["api_keys"]} == {"owner", "robot-2"}
        assert "api_key" not in json.dumps(listed["api_keys"]) and new["api_key"] not in json.dumps(listed)
        # the new key shares the account's balance
        async with client(server, new["api_key"]) as c2:
            assert (await c2.get("/api/core/account/balance")).json()["balance_uomcu"] == 5_000_000
        r = await c.post("/api/core/api_keys/delete", json={"key_id": new["key_id"]})
        assert r.json() == {"deleted": new["key_id"]}
        r = await c.post("/api/core/api_keys/delete", json={"key_id": new["key_id"]})
        assert r.status_code == 404
        other = await server.create_key("stranger")
        r = await c.post("/api/core/api_keys/delete", json={"key_id": other.split("_")[1]})
        assert r.status_code == 404  # another account's key is out of reach
        for body, message in [("{", "Invalid JSON"), ("[]", "JSON object"), ("{}", "'key_id' is required")]:
            r = await c.post("/api/core/api_keys/delete", content=body)
            assert (r.status_code, r.json()) == (400, {"error": message}) or message in r.json()["error"]
    async with client(server, new["api_key"]) as c2:
        r = await c2.get("/api/core/account/balance")
        assert (r.status_code, r.json()) == (401, {"error": "API key revoked"})


async def test_admin_api_needs_its_own_configured_credential(make_server: Any, server: Any) -> None:
    bare = make_server()
    async with client(bare, admin=True) as c:
        r = await c.get("/api/admin/accounts")
        assert r.status_code == 503 and "admin API not configured" in r.json()["error"]
    key = await server.create_key()
    async with client(server, key) as c:  # an API key is not an admin credential
        assert (await c.get("/api/admin/accounts")).status_code == 401
    async with httpx.AsyncClient(base_url=server.http) as c:
        r = await c.get("/api/admin/accounts", headers={"authorization": "Bearer wrong-token-wrong-token"})
        assert (r.status_code, r.json()) == (401, {"error": "invalid admin credential"})


async def test_admin_accounts_top_ups_keys_and_limits(server: Any) -> None:
    async with client(server, admin=True) as c:
        r = await c.post("/api/admin/accounts", json={"name": "fleet", "balance": "12.5"})
        assert r.status_code == 200
        account, first = r.json()["account"], r.json()["key"]
        assert account["balance_uomcu"] == 12_500_000 and first["api_key"].startswith("sk_")
        aid = account["account_id"]
        r = await c.post(f"/api/admin/accounts/{aid}/top_up", json={"amount": 7.5})
        assert r.json()["balance_uomcu"] == 20_000_000
        r = await c.post(f"/api/admin/accounts/{aid}/top_up", json={"amount": "-0.5"})
        assert r.json()["balance_omcu"] == "19.5"
        assert (await c.post("/api/admin/accounts/acct_nope/top_up", json={"amount": 1})).status_code == 404
        r = await c.post(f"/api/admin/accounts/{aid}/keys", json={"name": "arm", "max_streams": 2, "rpm": 10})
        key = r.json()
        assert (key["max_streams"], key["rpm"]) == (2, 10)
        r = await c.patch(f"/api/admin/keys/{key['key_id']}", json={"rpm": None, "expires": "2030-01-01T00:00:00Z"})
        assert (r.json()["rpm"], r.json()["max_streams"]) == (None, 2) and r.json()["expires"].startswith("2030")
        bad = await c.patch(f"/api/admin/keys/{key['key_id']}", json={"rpm": 0})
        assert bad.status_code == 400
        listed = (await c.get("/api/admin/accounts")).json()["accounts"]
        assert [a["balance_omcu"] for a in listed if a["account_id"] == aid] == ["19.5"]
        r = await c.post(f"/api/admin/keys/{key['key_id']}/revoke")
        assert r.json() == {"revoked": key["key_id"]}
        for body in ({"name": ""}, {"name": "x", "balance": -1}, {"name": "x", "balance": "abc"}):
            assert (await c.post("/api/admin/accounts", json=body)).status_code == 400


@pytest.mark.slow
async def test_usage_history_filters_and_csv(server: Any) -> None:
    key = await server.create_key(balance_uomcu=50_000_000)
    async with client(server, key) as c:
        other = (await c.post("/api/core/api_keys/create", json={"name": "second"})).json()
        for text in ("One.", "Two two."):
            assert (await c.post("/api/core/local/tts", json={"text": text})).status_code == 200
    async with client(server, other["api_key"]) as c2:
        assert (await c2.post("/api/core/riva/tts", json={"text": "Three."})).status_code == 200
    pcm, rate = read_wav(SAMPLES / "hello_robot.wav")
    await stream(server.ws(api_key=key), om1_frames(pcm, rate))
    async with client(server, key) as c:
        everything = (await c.get("/api/core/account/usage")).json()["usage"]
        assert len(everything) == 4  # the whole account, both keys
        tts = (await c.get("/api/core/account/usage", params={"kind": "tts"})).json()["usage"]
        assert [u["kind"] for u in tts] == ["tts"] * 3
        mine = (await c.get("/api/core/account/usage", params={"key_id": other["key_id"]})).json()["usage"]
        assert [u["provider"] for u in mine] == ["riva"]
        newest = everything[0]["created"]
        since = (await c.get("/api/core/account/usage", params={"since": newest})).json()["usage"]
        until = (await c.get("/api/core/account/usage", params={"until": newest})).json()["usage"]
        assert len(since) >= 1 and len(since) + len(until) == 4
        r = await c.get("/api/core/account/usage", params={"format": "csv"})
        assert r.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert len(rows) == 4 and {row["kind"] for row in rows} == {"asr", "tts"}
        assert all(row["account_id"] == everything[0]["account_id"] for row in rows)
        r = await c.get("/api/core/account/usage", headers={"accept": "text/csv"})
        assert r.text.startswith("created,id,account_id")
        for params in ({"kind": "stt"}, {"format": "xml"}, {"since": "soon"}, {"limit": 0}):
            assert (await c.get("/api/core/account/usage", params=params)).status_code == 400
    async with client(server, admin=True) as c:
        r = await c.get("/api/admin/usage", params={"account_id": everything[0]["account_id"], "format": "csv"})
        assert len(list(csv.DictReader(io.StringIO(r.text)))) == 4


@pytest.mark.slow
async def test_tts_needs_credit_for_the_whole_request(server: Any) -> None:
    # elevenlabs costs 30,000 µOMCU per character: 0.1 OMCU covers 3 characters.
    key = await server.create_key(balance_uomcu=100_000)
    async with client(server, key) as c:
        r = await c.post("/api/core/elevenlabs/tts", json={"text": "Hello there."})
        assert r.status_code == 402 and "this request costs 0.36 OMCU, 0.1 available" in r.json()["error"]
        r = await c.post("/api/core/elevenlabs/tts", json={"text": "Hi."})
        assert r.status_code == 200
        assert (await c.get("/api/core/account/balance")).json()["balance_uomcu"] == 10_000


async def test_expired_key_is_refused(server: Any) -> None:
    key = await server.create_key()
    ledger = await server.ledger()
    await ledger.update_key(key.split("_")[1], expires="2020-01-01T00:00:00Z")
    await ledger.close()
    async with client(server, key) as c:
        r = await c.get("/api/core/account/balance")
        assert (r.status_code, r.json()) == (401, {"error": "API key expired"})
    messages, code, _ = await stream(server.ws(api_key=key), [], close_stream=False)
    assert (code, errors(messages)) == (CLOSE_UNAUTHORIZED, ["API key expired"])


@pytest.mark.slow
async def test_requests_per_minute_limit(server: Any) -> None:
    key = await server.create_key()
    ledger = await server.ledger()
    await ledger.update_key(key.split("_")[1], rpm=2)
    await ledger.close()
    async with client(server, key) as c:
        codes = [(await c.post("/api/core/local/tts", json={"text": "Hi."})).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        r = await c.post("/api/core/local/tts", json={"text": "Hi."})
        assert r.json() == {"error": "rate limit: this API key allows 2 requests per minute"}
    messages, code, _ = await stream(server.ws(api_key=key), [], close_stream=False)
    assert code == CLOSE_LIMIT and "rate limit" in errors(messages)[0]


async def test_concurrent_stream_limit(server: Any) -> None:
    key = await server.create_key()
    ledger = await server.ledger()
    await ledger.update_key(key.split("_")[1], max_streams=1)
    await ledger.close()
    async with websockets.connect(server.ws(api_key=key)) as first:
        await first.send(QUIET)
        messages, code, _ = await stream(server.ws(api_key=key), [], close_stream=False)
        assert code == CLOSE_LIMIT
        assert errors(messages) == ["too many concurrent streams: this API key allows 1"]
    # the first stream's lease is released when it closes
    for _ in range(50):
        messages, code, _ = await stream(server.ws(api_key=key), [QUIET])
        if code == 1000:
            break
        await asyncio.sleep(0.1)
    assert code == 1000


async def test_revoking_a_key_closes_its_open_streams(server: Any) -> None:
    key = await server.create_key()
    async with client(server, key) as c:
        spare = (await c.post("/api/core/api_keys/create", json={"name": "spare"})).json()
    async with websockets.connect(server.ws(api_key=key)) as ws:
        await ws.send(QUIET)
        async with client(server, spare["api_key"]) as c:
            r = await c.post("/api/core/api_keys/delete", json={"key_id": key.split("_")[1]})
            assert r.status_code == 200
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert message == {"error": "API key revoked"}
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == CLOSE_UNAUTHORIZED
