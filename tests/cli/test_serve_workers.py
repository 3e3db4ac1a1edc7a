"""``speech serve --workers N``: N gateway processes on one port, each a replica."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from speech.metering.factory import open_ledger
from tests.api.streaming import om1_frames, replies, stream
from tests.api.test_replicas import Replica, launch, wait_ready
from tests.conftest import SAMPLES, read_wav

pytestmark = pytest.mark.slow


def workers_of(pid: int) -> list[int]:
    """The supervisor's worker processes (multiprocessing spawn children)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"spawn_main" in cmdline:
            out.append(int(entry.name))
    return sorted(out)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    tmp = tmp_path_factory.mktemp("workers")
    replica = launch("workers", str(tmp / "ledger.db"), tmp, SPEECH_WORKERS="2")
    try:
        wait_ready(replica)
        yield replica
    finally:
        replica.stop()


async def test_two_workers_share_the_port_and_the_ledger(gateway: Replica) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # both have loaded their engines (a loading one answers 1013)
        if gateway.log.read_bytes().count(b"speech.app: ready") >= 2:
            break
        await asyncio.sleep(0.2)
    assert len(workers_of(gateway.proc.pid)) == 2
    db = os.fspath(gateway.log.parent / "ledger.db")
    ledger = await open_ledger(db)
    try:
        key, _ = await ledger.create_key("w", 10**9)
    finally:
        await ledger.close()
    pcm, _ = read_wav(SAMPLES / "two_commands.wav")
    runs = await asyncio.gather(*(stream(gateway.ws(api_key=key), om1_frames(pcm, 16000)) for _ in range(6)))
    assert all(code == 1000 and len(replies(msgs)) == 2 for msgs, code, _ in runs)
    ledger = await open_ledger(db)
    try:
        assert len(await ledger.usage()) == 12  # every utterance billed once, whichever worker served it
    finally:
        await ledger.close()


async def test_a_killed_worker_is_replaced_and_service_goes_on(gateway: Replica) -> None:
    before = workers_of(gateway.proc.pid)
    assert len(before) == 2
    os.kill(before[0], signal.SIGKILL)
    deadline = time.monotonic() + 90
    after: list[int] = []
    while time.monotonic() < deadline:
        after = workers_of(gateway.proc.pid)
        if len(after) == 2 and before[0] not in after:
            break
        await asyncio.sleep(0.2)
    assert len(after) == 2 and before[0] not in after
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() < deadline:  # the new worker loads its engines; the other serves meanwhile
            if (await client.get(gateway.http + "/healthz")).status_code == 200:
                break
            await asyncio.sleep(0.2)
        assert (await client.get(gateway.http + "/healthz")).status_code == 200
