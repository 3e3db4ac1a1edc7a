"""Fixtures running the ledger tests against both backends.

``backend`` is parametrized over ``sqlite`` (a file in the test's tmp dir)
and ``postgres`` (a database created for the test module on the server named
by ``SPEECH_TEST_POSTGRES_URL``, default
``postgresql://postgres@127.0.0.1:5432/postgres``, emptied before each test
and dropped at the end). Without a reachable server the PostgreSQL cases are
skipped, except when ``CI`` is set: there they fail, because CI must run them.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest

from speech.metering.factory import open_ledger
from speech.metering.ledger import Ledger
from speech.metering.prices import PriceTable
from speech.metering.records import UsageIn
from speech.settings import PriceSettings

PRICES = PriceTable.from_settings(PriceSettings())
PG_URL = os.environ.get("SPEECH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TABLES = ("usage", "reservations", "stream_leases", "rate_counters", "api_keys", "accounts")

T = TypeVar("T")


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2025, 1, 31, 12, 0, 0, 123456, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float = 1.0) -> None:
        self.now += timedelta(seconds=seconds)


def asr(key_id: str, idem: str, ms: int = 60_000, route: str = "google", received: int | None = None) -> UsageIn:
    return UsageIn.asr(
        PRICES,
        idempotency_key=idem,
        key_id=key_id,
        provider=route,
        engine="local",
        audio_ms=ms,
        received_ms=received if received is not None else ms,
    )


def tts(key_id: str, idem: str, chars: int = 11, route: str = "elevenlabs") -> UsageIn:
    return UsageIn.tts(PRICES, idempotency_key=idem, key_id=key_id, provider=route, engine="local", characters=chars)


def llm(
    key_id: str,
    idem: str,
    *,
    model: str = "gpt-4o-mini",
    tokens_in: int = 1000,
    tokens_out: int = 500,
    estimated: bool = False,
    route: str = "openai",
) -> UsageIn:
    return UsageIn.llm(
        PRICES,
        idempotency_key=idem,
        key_id=key_id,
        provider=route,
        engine=route,
        model=model,
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        estimated=estimated,
    )


# ---------------------------------------------------------------- PostgreSQL plumbing


def run_in_thread(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on a fresh event loop in its own thread (for sync
    fixtures, so pytest-asyncio's loops are left alone)."""
    result: list[Any] = []

    def target() -> None:
        try:
            result.append(("ok", asyncio.run(factory())))  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            result.append(("err", exc))

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    status, value = result[0]
    if status == "err":
        raise value
    return value  # type: ignore[no-any-return]


def pg_url(database: str) -> str:
    parts = urlsplit(PG_URL)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_available() -> str:
    """The admin URL, after checking the server answers (skip, or fail under CI)."""
    try:
        import asyncpg  # noqa: F401

        run_in_thread(lambda: _admin("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "no server here"
        reason = f"PostgreSQL not reachable at {urlsplit(PG_URL).hostname}:{urlsplit(PG_URL).port}: {exc!r}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set, so the PostgreSQL ledger tests must run)")
        pytest.skip(reason + " (set SPEECH_TEST_POSTGRES_URL; under CI this fails)")
    return PG_URL


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A new, empty database; yields its URL and drops it afterwards."""
    name = f"ledger_test_{uuid.uuid4().hex}"
    run_in_thread(lambda: _admin(f'CREATE DATABASE "{name}"'))
    try:
        yield pg_url(name)
    finally:
        run_in_thread(lambda: _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def pg_fresh(postgres_available: str) -> Iterator[str]:
    """A new, empty database for one test."""
    with fresh_pg_database() as url:
        yield url


@pytest.fixture(scope="module")
def pg_module_database(postgres_available: str) -> Iterator[str]:
    """One migrated database per test module."""
    with fresh_pg_database() as url:

        async def migrate() -> None:
            led = await open_ledger(url)
            await led.close()

        run_in_thread(migrate)
        yield url


# ---------------------------------------------------------------- backends


@dataclass
class Backend:
    """Where a test's ledger lives, and ways to open more ledgers on it
    (each one is another "replica": its own connections) and to look at the
    raw storage."""

    kind: str
    target: str
    clock: FakeClock
    tmp_path: Path
    opened: list[Ledger] = field(default_factory=list)

    async def open(self, clock: Any = None) -> Ledger:
        led = await open_ledger(self.target, clock=clock or self.clock)
        self.opened.append(led)
        return led

    async def fetch(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Raw SQL on a separate connection (``?`` placeholders)."""
        if self.kind == "sqlite":
            with closing(sqlite3.connect(self.target)) as conn:
                return [tuple(r) for r in conn.execute(sql, params).fetchall()]
        import asyncpg

        from speech.metering.postgres import to_pg

        conn = await asyncpg.connect(self.target)
        try:
            return [tuple(r) for r in await conn.fetch(to_pg(sql), *params)]
        finally:
            await conn.close()

    async def stored_bytes(self) -> bytes:
        """Everything the backend stored, as bytes to search."""
        if self.kind == "sqlite":
            return b"".join(p.read_bytes() for p in self.tmp_path.iterdir() if p.is_file())
        chunks: list[str] = []
        for table in (*TABLES, "schema_version"):
            chunks += [str(r[0]) for r in await self.fetch(f"SELECT t::text FROM {table} t")]
        return "\n".join(chunks).encode()

    async def close_all(self) -> None:
        for led in self.opened:
            await led.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        b = Backend("sqlite", str(tmp_path / "ledger.db"), clock, tmp_path)
    else:
        url = request.getfixturevalue("pg_module_database")
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
        finally:
            await conn.close()
        b = Backend("postgres", url, clock, tmp_path)
    try:
        yield b
    finally:
        await b.close_all()


@pytest.fixture
async def ledger(backend: Backend) -> Ledger:
    return await backend.open()
