"""What the web console needs from the gateway over HTTP: its static files
(with a same-origin-only Content-Security-Policy, in the built wheel too),
usage per day, and the admin's key list. The page itself is tested in a real
browser in tests/browser."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from speech.console import STATIC
from speech.metering.prices import PriceTable
from speech.metering.records import UsageIn
from speech.settings import PriceSettings
from tests.conftest import ROOT

ADMIN = "admin-token-0123456789abcdef"
STATIC_FILES = sorted(p.relative_to(STATIC).as_posix() for p in STATIC.rglob("*") if p.is_file())


@pytest.fixture
def server(make_server: Any) -> Any:
    return make_server({"admin.token": ADMIN})


def client(server: Any, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.http, headers=headers, timeout=60)


# ---------------------------------------------------------------- static files


async def test_console_is_served_with_a_same_origin_policy(server: Any) -> None:
    async with client(server) as c:
        for path in ("/console", "/"):
            r = await c.get(path)
            assert (r.status_code, r.headers["location"]) == (307, "/console/"), path
        r = await c.get("/console/")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="js/main.js">' in r.text
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
        assert r.headers["referrer-policy"] == "no-referrer"
        for name in STATIC_FILES:
            r = await c.get(f"/console/{name}")
            assert r.status_code == 200, name
            assert r.headers["content-security-policy"] == csp, name
        r = await c.get("/console/js/main.js")
        assert r.headers["content-type"].split(";")[0] in ("text/javascript", "application/javascript")
        for bad in ("/console/nope.js", "/console/..%2f..%2fpyproject.toml", "/console/../api/__init__.py"):
            assert (await c.get(bad)).status_code == 404, bad


def test_page_loads_nothing_from_elsewhere_and_every_import_exists() -> None:
    """No CDN, no external fetch: the only absolute URL allowed is the SVG namespace."""
    for name in STATIC_FILES:
        source = (STATIC / name).read_text()
        urls = set(re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s\"'`)]*", source, re.IGNORECASE))
        assert urls <= {"http://www.w3.org/2000/svg"}, (name, urls)
        if name.endswith(".js"):
            for target in re.findall(r"""(?:from|import)\s*["'](\.[^"']+)["']""", source):
                assert (STATIC / name).parent.joinpath(target).resolve().is_file(), (name, target)
            assert "localStorage.set" not in source and "document.cookie" not in source, name
    index = (STATIC / "index.html").read_text()
    for ref in re.findall(r'(?:src|href)="([^"#]+)"', index):
        assert (STATIC / ref).is_file(), ref
    assert "<script>" not in index and " style=" not in index  # the CSP allows no inline script or style


@pytest.mark.slow
def test_static_files_are_in_the_wheel(tmp_path: Path) -> None:
    # The venv's setuptools when it has one (Python 3.11's venvs do); else pip fetches it.
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", str(tmp_path), str(ROOT)]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("speech_gateway-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = {f"speech/console/static/{n}" for n in STATIC_FILES} - names
    assert not missing


# ---------------------------------------------------------------- usage per day


async def test_usage_per_day_sums_the_accounts_usage(server: Any) -> None:
    key = await server.create_key(balance_uomcu=100_000_000)
    other = await server.create_key("other")
    async with client(server, **{"x-api-key": key}) as c:
        for text in ("Hello there.", "Turn left."):
            r = await c.post("/api/core/riva/tts", json={"text": text})
            assert r.status_code == 200
    ledger = await server.ledger()
    try:
        prices = PriceTable.from_settings(PriceSettings())
        key_id = key.split("_")[1]
        for n, ms in enumerate((1500, 2250)):
            await ledger.record_usage(
                UsageIn.asr(
                    prices, idempotency_key=f"t:{n}", key_id=key_id, provider="google", engine="local", audio_ms=ms
                )
            )
        await ledger.record_usage(
            UsageIn.asr(
                prices, idempotency_key="o", key_id=other.split("_")[1], provider="google", engine="local", audio_ms=9
            )
        )
        records = await ledger.usage(key_id=key_id)
    finally:
        await ledger.close()
    today = datetime.now(UTC).date()
    async with client(server, **{"x-api-key": key}) as c:
        body = (await c.get("/api/core/account/usage/daily", params={"days": 7})).json()
        default = (await c.get("/api/core/account/usage/daily")).json()
    assert body["first_day"] == (today - timedelta(days=6)).isoformat() and body["last_day"] == today.isoformat()
    assert default["first_day"] == (today - timedelta(days=29)).isoformat()
    by_kind = {row["kind"]: row for row in body["daily"]}
    assert set(by_kind) == {"asr", "tts"} and {row["day"] for row in body["daily"]} == {today.isoformat()}
    assert by_kind["asr"]["records"] == 2 and by_kind["asr"]["quantity"] == 3.75 and by_kind["asr"]["unit"] == "second"
    assert (
        by_kind["tts"]["quantity"] == len("Hello there.") + len("Turn left.") and by_kind["tts"]["unit"] == "character"
    )
    for kind in ("asr", "tts"):
        assert by_kind[kind]["cost_uomcu"] == sum(r.cost_uomcu for r in records if r.kind == kind) > 0


async def test_usage_per_day_checks_its_input(server: Any) -> None:
    key = await server.create_key()
    async with client(server, **{"x-api-key": key}) as c:
        for days in ("0", "367", "-1", "abc", "1e3", "99999"):
            r = await c.get("/api/core/account/usage/daily", params={"days": days})
            assert (r.status_code, r.json()) == (400, {"error": "'days' must be an integer between 1 and 366"}), days
        assert (await c.get("/api/core/account/usage/daily", params={"days": "366"})).status_code == 200
    async with client(server) as c:
        r = await c.get("/api/core/account/usage/daily")
        assert (r.status_code, r.json()) == (401, {"error": "missing API key"})


# ---------------------------------------------------------------- admin key list


async def test_admin_lists_keys_with_their_limits(server: Any) -> None:
    async with client(server, authorization=f"Bearer {ADMIN}") as c:
        created = (await c.post("/api/admin/accounts", json={"name": "acme", "balance": 3})).json()
        account_id = created["account"]["account_id"]
        r = await c.post(f"/api/admin/accounts/{account_id}/keys", json={"name": "robot", "max_streams": 2, "rpm": 9})
        robot = r.json()
        await c.post("/api/admin/accounts", json={"name": "other"})
        everything = (await c.get("/api/admin/keys")).json()["api_keys"]
        mine = (await c.get("/api/admin/keys", params={"account_id": account_id})).json()["api_keys"]
    assert len(everything) == 3
    assert [(k["name"], k["max_streams"], k["rpm"], k["revoked"]) for k in mine] == [
        ("acme", None, None, None),
        ("robot", 2, 9, None),
    ]
    assert robot["api_key"] not in str(everything)  # secrets are shown once, at creation
    async with client(server, authorization="Bearer wrong-token-0123456789") as c:
        r = await c.get("/api/admin/keys")
        assert (r.status_code, r.json()) == (401, {"error": "invalid admin credential"})


async def test_admin_key_list_is_off_without_a_token(make_server: Any) -> None:
    srv = make_server()
    async with client(srv, authorization=f"Bearer {ADMIN}") as c:
        r = await c.get("/api/admin/keys")
    assert r.status_code == 503 and r.json()["error"].startswith("admin API not configured")
