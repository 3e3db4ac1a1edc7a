"""Several gateway replicas sharing one PostgreSQL ledger.

Two real gateway processes (``python -m speech serve --port 0``) run on a fresh
database for the whole module, each with its own local engines, connection
pool, stream registry and revocation watcher (polling every 0.2 s); test 5
starts and kill -9s a third. The tests spend one account from both replicas at
once, hold a key's stream limit across them, revoke a key under open streams on
both, and kill a replica mid-utterance.

PostgreSQL comes from ``SPEECH_TEST_POSTGRES_URL`` as in
``tests/metering/conftest.py``: skipped when unreachable, failed when ``CI`` is
set.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import websockets

from speech.metering.factory import open_ledger
from speech.metering.ledger import Ledger
from speech.metering.prices import PriceTable
from speech.metering.records import ApiKey
from speech.settings import PriceSettings
from tests.api.streaming import errors, om1_frames, replies, stream
from tests.conftest import ROOT, SAMPLES, read_wav
from tests.metering.conftest import fresh_pg_database, postgres_available  # noqa: F401 - fixture, by name

pytestmark = pytest.mark.slow

PRICES = PriceTable.from_settings(PriceSettings())  # the replicas run the default prices
LISTENING = re.compile(rb"Uvicorn running on http://127\.0\.0\.1:(\d+)")
START_DEADLINE_S = 60.0
POLL_S = 0.05
TWO_COMMANDS = read_wav(SAMPLES / "two_commands.wav")
HELLO_ROBOT = read_wav(SAMPLES / "hello_robot.wav")


# ---------------------------------------------------------------- replicas


@dataclass
class Replica:
    """One ``speech serve`` process; its stdout and stderr go to ``log``."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    port: int = 0

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws(self, route: str = "local", **query: Any) -> str:
        qs = "&".join(f"{k}={v}" for k, v in query.items())
        return f"ws://127.0.0.1:{self.port}/api/core/{route}/asr" + (f"?{qs}" if qs else "")

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_bytes().decode("utf-8", "replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def launch(name: str, db_url: str, log_dir: Path, **env: str) -> Replica:
    """Start ``speech serve --port 0`` on ``db_url``; call :func:`wait_ready` next."""
    # The parent's SPEECH_* variables (SPEECH_TEST_POSTGRES_URL, credentials)
    # are not the replica's settings: it gets the defaults plus ``env``.
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SPEECH_")}
    environ.update(
        SPEECH_DB=db_url,
        SPEECH_REPLICA_ID=name,
        SPEECH_LIMITS__REVOCATION_POLL_S="0.2",
        # Room for every TTS request of test 1 in one replica's queue, so a
        # refusal there can only be the ledger's 402.
        SPEECH_LOCAL__TTS_QUEUE="100",
        **env,
    )
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "speech", "serve", "--port", "0"],
            cwd=ROOT,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Replica(name, proc, log)


def wait_ready(replica: Replica, deadline_s: float = START_DEADLINE_S) -> None:
    """Read the port from the "Uvicorn running on" line, then wait for /healthz 200 (engines loaded)."""
    deadline = time.monotonic() + deadline_s
    while not replica.port:
        match = LISTENING.search(replica.log.read_bytes())
        if match:
            replica.port = int(match.group(1))
        elif replica.proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{replica.name} did not start (exit {replica.proc.poll()}):\n{replica.tail()}")
        else:
            time.sleep(POLL_S)
    with httpx.Client(timeout=5) as client:
        while True:
            try:
                if client.get(replica.http + "/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if replica.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{replica.name} never became healthy (exit {replica.proc.poll()}):\n{replica.tail()}")
            time.sleep(POLL_S)


@pytest.fixture(scope="module")
def database(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh PostgreSQL database for the module, dropped at the end."""
    request.getfixturevalue("postgres_available")
    with fresh_pg_database() as url:
        yield url


@pytest.fixture(scope="module")
def replicas(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Replica, Replica]]:
    """Replicas A and B on the same database, started together (they migrate it together too)."""
    log_dir = tmp_path_factory.mktemp("replicas")
    started = [launch(name, database, log_dir) for name in ("replica-a", "replica-b")]
    try:
        for replica in started:
            wait_ready(replica)
        yield started[0], started[1]
    finally:
        for replica in started:
            replica.stop()


# ---------------------------------------------------------------- helpers


@contextlib.asynccontextmanager
async def ledger_at(url: str, **kwargs: Any) -> AsyncIterator[Ledger]:
    led = await open_ledger(url, **kwargs)
    try:
        yield led
    finally:
        await led.close()


async def new_key(url: str, name: str, balance_uomcu: int, **limits: Any) -> tuple[str, ApiKey]:
    async with ledger_at(url) as led:
        return await led.create_key(name, balance_uomcu, **limits)


async def live_leases(url: str, key_id: str) -> int:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM stream_leases WHERE key_id = $1", key_id))
    finally:
        await conn.close()


async def wait_for_leases(url: str, key_id: str, count: int, deadline_s: float = 5.0) -> None:
    deadline = time.monotonic() + deadline_s
    while (n := await live_leases(url, key_id)) != count:
        assert time.monotonic() < deadline, f"key {key_id} holds {n} stream leases, expected {count}"
        await asyncio.sleep(POLL_S)


async def drain(ws: Any, deadline_s: float = 5.0) -> tuple[list[dict[str, Any]], int | None]:
    """Every message until the server closes the socket, and the close code."""
    messages: list[dict[str, Any]] = []

    async def read() -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for message in ws:
                messages.append(json.loads(message))

    await asyncio.wait_for(read(), deadline_s)
    return messages, ws.close_code


async def in_session(ws: Any) -> None:
    """Return once the server's read loop runs for ``ws`` (so the stream is
    registered with its replica): a bad frame is answered from inside it."""
    await ws.send("not json")
    reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert reply == {"error": "text frame is not valid JSON"}, reply


# ---------------------------------------------------------------- tests


async def test_one_account_spent_from_both_replicas_at_once_never_goes_below_zero(
    database: str, replicas: tuple[Replica, Replica]
) -> None:
    """80 concurrent TTS requests, alternating between A and B, on a balance
    that covers exactly 37 of them. TTS reserves its full cost before any work
    or answers 402, and the reservation is serialised on the account row in
    PostgreSQL, so the bound is zero overspend: exactly 37 succeed, the
    balance ends at exactly 0, and nothing stays held."""
    text = "Turn left."
    cost = PRICES.tts_cost("elevenlabs", len(text))
    assert cost == len(text) * 30_000 == 300_000  # 30,000 OMCU per 1M characters
    affordable, attempts = 37, 80
    initial = affordable * cost
    secret, key = await new_key(database, "tts-race", initial)

    async def post(client: httpx.AsyncClient, replica: Replica) -> tuple[str, httpx.Response]:
        url = f"{replica.http}/api/core/elevenlabs/tts"
        return replica.name, await client.post(url, json={"text": text}, headers={"x-api-key": secret})

    limits = httpx.Limits(max_connections=attempts, max_keepalive_connections=attempts)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        results = await asyncio.gather(*(post(client, replicas[i % 2]) for i in range(attempts)))

    served: dict[str, int] = {r.name: 0 for r in replicas}
    unexpected = []
    for name, response in results:
        if response.status_code == 200:
            served[name] += 1
            assert response.headers["x-usage-cost-uomcu"] == str(cost)
        elif response.status_code == 402:
            body = response.json()
            assert set(body) == {"error"} and body["error"].startswith("insufficient balance"), body
        else:
            unexpected.append((name, response.status_code, response.text[:200]))
    assert unexpected == []
    successes = sum(served.values())
    print(f"\nTTS successes by replica: {served}; refused: {attempts - successes}")

    async with ledger_at(database) as led:
        final = await led.balance(key.account_id)
        available = await led.available(key.account_id)
        records = await led.usage(key_id=key.key_id, limit=1000)
    assert successes * cost == initial - final
    assert final >= 0
    assert (successes, final) == (affordable, 0)  # every refusal came after the credit was all spoken for
    assert len(records) == successes and all(r.cost_uomcu == cost for r in records)
    assert available == final  # no reservation left holding credit


async def test_asr_streams_on_both_replicas_share_one_small_balance(
    database: str, replicas: tuple[Replica, Replica]
) -> None:
    """Rounds of four concurrent ``two_commands.wav`` streams (two per replica)
    on the priced google route (50 OMCU/min), against 3 OMCU: about 3.6 s of
    audio for a demand of about 15 s per round.

    The bound: every utterance reserves credit before its audio goes upstream
    and is cut at the credit it holds (no audio past it goes upstream or is
    billed), so the bound is **zero overspend**, whatever the number of
    streams and replicas. Also exact accounting: the usage records explain
    every µOMCU that left the balance, and no reservation is left holding
    credit."""
    initial = 3_000_000
    secret, key = await new_key(database, "asr-race", initial)
    pcm, rate = TWO_COMMANDS
    frames: list[str | bytes] = list(om1_frames(pcm, rate))
    outcomes: list[tuple[list[dict[str, Any]], int | None]] = []
    for _ in range(4):
        urls = [r.ws("google", api_key=secret) for r in (*replicas, *replicas)]
        results = await asyncio.gather(*(stream(url, frames, deadline_s=30) for url in urls))
        outcomes += [(messages, code) for messages, code, _ in results]
        async with ledger_at(database) as led:
            if await led.available(key.account_id) <= 0:
                break

    for messages, code in outcomes:
        assert code in (1000, 4402), (code, messages)
        if code == 4402:
            assert errors(messages)[-1].startswith("insufficient balance"), messages
        else:
            assert errors(messages) == [], messages
    assert any(code == 4402 for _, code in outcomes)  # the credit ran out, as designed

    async with ledger_at(database) as led:
        final = await led.balance(key.account_id)
        available = await led.available(key.account_id)
        records = await led.usage(key_id=key.key_id, limit=1000)
    spent = sum(r.cost_uomcu for r in records)
    print(f"\nASR: {len(outcomes)} streams, {len(records)} utterances billed, final balance {final} µOMCU")
    assert records and all(r.provider == "google" for r in records)
    assert spent == initial - final
    assert final >= 0
    assert available == final


async def test_an_utterance_never_bills_past_the_credit_it_holds(
    database: str, replicas: tuple[Replica, Replica]
) -> None:
    """The zero-overspend claim, deterministically: after the first utterance
    of ``two_commands.wav`` is billed, the account is corrected down to
    75,000 µOMCU (90 ms of google audio); the second utterance reserves that,
    so it must cost at most that and the balance must stay >= 0, although the
    VAD had already produced pre-roll + start window + the rest of the opening
    frame (~450 ms) by the time the reservation came back: only the 90 ms
    the credit covers goes upstream and is billed."""
    left = 75_000
    secret, key = await new_key(database, "asr-cap", 10_000_000)
    pcm, rate = TWO_COMMANDS
    frames = om1_frames(pcm, rate)
    first_end = 11  # frames 0..10 carry the first utterance and the silence that ends it
    async with websockets.connect(replicas[0].ws("google", api_key=secret), max_size=None) as ws:
        for frame in frames[:first_end]:
            await ws.send(frame)
        first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert "asr_reply" in first, first  # billed before the reply left
        async with ledger_at(database) as led:
            balance = await led.balance(key.account_id)
            await led.top_up(key.account_id, left - balance)
        for frame in frames[first_end:]:
            await ws.send(frame)
        await ws.send(json.dumps({"type": "CloseStream"}))
        messages, code = await drain(ws, 10)
    assert code == 4402, messages  # the cut-off remainder found no credit
    async with ledger_at(database) as led:
        final = await led.balance(key.account_id)
        second = (await led.usage(key_id=key.key_id, limit=10))[0]
    print(f"\nsecond utterance: granted {left} µOMCU, billed {second.audio_ms} ms = {second.cost_uomcu} µOMCU")
    assert second.cost_uomcu <= left
    assert final >= 0


async def test_concurrent_stream_limit_holds_across_replicas(database: str, replicas: tuple[Replica, Replica]) -> None:
    """max_streams=2: two streams open on A take both slots, so a third on B
    is refused (error frame naming the limit, close 4429); once one on A
    closes, a new stream on B is served."""
    a, b = replicas
    secret, key = await new_key(database, "two-streams", 10_000_000, max_streams=2)
    async with contextlib.AsyncExitStack() as stack:
        on_a = [await stack.enter_async_context(websockets.connect(a.ws(api_key=secret))) for _ in range(2)]
        await wait_for_leases(database, key.key_id, 2)

        async with websockets.connect(b.ws(api_key=secret)) as third:
            messages, code = await drain(third)
        assert messages == [{"error": "too many concurrent streams: this API key allows 2"}]
        assert code == 4429

        await on_a[0].close()
        await wait_for_leases(database, key.key_id, 1)  # A gave its slot back to the shared ledger
        pcm, rate = HELLO_ROBOT
        messages, code, _ = await stream(b.ws(api_key=secret), list(om1_frames(pcm, rate)), deadline_s=30)
        assert code == 1000 and errors(messages) == [] and replies(messages), messages
    await wait_for_leases(database, key.key_id, 0)


async def test_revocation_closes_streams_on_every_replica(database: str, replicas: tuple[Replica, Replica]) -> None:
    """One open stream on each replica; the key is revoked in the shared
    ledger; each replica's watcher (polling every 0.2 s) closes its stream
    with {"error": "API key revoked"} and 4401."""
    secret, key = await new_key(database, "revoked", 10_000_000)
    async with contextlib.AsyncExitStack() as stack:
        sockets = [await stack.enter_async_context(websockets.connect(r.ws(api_key=secret))) for r in replicas]
        for ws in sockets:
            await in_session(ws)
        async with ledger_at(database) as led:
            revoked_at = time.monotonic()
            assert await led.revoke(key.key_id)

        async def closed(ws: Any) -> tuple[list[dict[str, Any]], int | None, float]:
            messages, code = await drain(ws, 5)
            return messages, code, time.monotonic() - revoked_at

        results = await asyncio.gather(*(closed(ws) for ws in sockets))
    for messages, code, _ in results:
        assert messages == [{"error": "API key revoked"}]
        assert code == 4401
    times = ", ".join(f"{r.name} {s:.2f} s" for r, (_, _, s) in zip(replicas, results, strict=True))
    print(f"\nrevocation -> close: {times}")


async def test_kill_9_mid_utterance_keeps_committed_usage_and_frees_held_credit(
    database: str, replicas: tuple[Replica, Replica], tmp_path: Path
) -> None:
    """A third replica (reservations live 10 s) gets ``two_commands.wav`` in
    real time up to the middle of the second utterance (the client then goes
    quiet, so that utterance stays open whatever the machine's speed) and is
    killed with SIGKILL once the first reply has arrived and the second
    utterance holds its reservation. The first utterance's usage, committed
    before its reply left, is in the ledger; the orphaned reservation holds
    credit only until it expires, and expire_stale() removes it."""
    initial = 100_000_000
    secret, key = await new_key(database, "killed", initial)
    victim = launch("replica-c", database, tmp_path, SPEECH_LIMITS__RESERVATION_TTL_S="10")
    try:
        await asyncio.to_thread(wait_ready, victim)
        pcm, rate = TWO_COMMANDS
        frames = om1_frames(pcm, rate)
        mid_second = 20  # 4.0 s: the second utterance runs from 2.34 s to 4.74 s
        sent = 0
        async with websockets.connect(victim.ws("google", api_key=secret), close_timeout=2) as ws:

            async def send() -> None:
                nonlocal sent
                start = time.monotonic()
                for n, frame in enumerate(frames[:mid_second]):
                    await ws.send(frame)
                    sent = n + 1
                    await asyncio.sleep(max(0.0, start + (n + 1) * 0.2 - time.monotonic()))

            sender = asyncio.create_task(send())
            try:
                first = json.loads(await asyncio.wait_for(ws.recv(), 20))
                assert "asr_reply" in first, first
                async with ledger_at(database) as led:
                    deadline = time.monotonic() + 5
                    # The first utterance was settled before its reply: credit held now is the second's.
                    while await led.available(key.account_id) == await led.balance(key.account_id):
                        assert time.monotonic() < deadline, "the second utterance never reserved credit"
                        await asyncio.sleep(POLL_S)
                    victim.proc.send_signal(signal.SIGKILL)
                    await asyncio.to_thread(victim.proc.wait, 10)
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                    await sender
        print(f"\nkilled replica-c after {sent} of {len(frames)} frames, first reply {first}")
    finally:
        victim.stop()
    assert victim.proc.returncode == -signal.SIGKILL

    async with ledger_at(database) as led:
        (record,) = await led.usage(key_id=key.key_id)
        balance = await led.balance(key.account_id)
        held = balance - await led.available(key.account_id)
    assert record.kind == "asr" and record.provider == "google" and record.audio_ms > 0
    assert balance == initial - record.cost_uomcu  # the committed utterance, and nothing else
    assert held > 0  # the dead replica's reservation still holds credit (for at most 10 s)

    def later() -> datetime:
        return datetime.now(UTC) + timedelta(seconds=11)

    async with ledger_at(database, clock=later) as future:
        assert await future.available(key.account_id) == balance  # expired: holds nothing
        assert await future.expire_stale() >= 1
    async with ledger_at(database) as led:
        assert await led.available(key.account_id) == balance  # and it is gone, not just expired
