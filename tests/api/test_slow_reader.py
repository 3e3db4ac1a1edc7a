"""Stalled readers among busy clients: the gateway's memory stays flat.

A gateway process (``speech serve``, its RSS read from /proc) serves clients
that do their work normally (ASR streams sent faster than real time, streamed
TTS requests) while stalled clients ask for long speech and never read:

* two chunked-HTTP TTS streams of a ~90 s text at 48 kHz PCM, read by nobody;
* two websocket stream-input clients that push 40 sentences and never read
  (their websocket library stops reading the socket after one queued message).

The gateway synthesizes a stalled client's next sentence only when the
previous one's audio has left (transport writes wait when the peer does not
read) and stops reading text past ``tts.stream_max_pending_chars``. So the
test checks that (1) every normal client is served, (2) the stalled clients
got only part of their sentences synthesized and billed (what the kernel's
socket buffers take, ~10 sentences here), and (3) the gateway's resident
memory stays flat while they go on waiting and pushing, before and after
the busy clients' load. (Peak RSS *during* the load is not compared: with real
decodes it wanders by tens of MB from run to run, which would hide nothing
and prove nothing.)
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from speech.metering.factory import open_ledger
from tests.api.streaming import om1_frames, replies, stream
from tests.api.test_replicas import Replica, launch, wait_ready
from tests.conftest import SAMPLES, read_wav

pytestmark = pytest.mark.slow

SENTENCE = "This is sentence number {} of a long answer that nobody is listening to."
LONG = " ".join(SENTENCE.format(i) for i in range(40))
PHASE_S = 10.0
# Resident memory varies by less than this while nothing but the stalled clients runs.
FLAT_MB = 8.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def settle(pid: int, *, still_s: float = 3.0, within_s: float = 60.0) -> None:
    """Wait until the gateway's RSS has moved less than 2 MB for ``still_s``
    (the stalled clients have filled every buffer they can)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + within_s
    mark, since = rss_mb(pid), loop.time()
    while loop.time() - since < still_s and loop.time() < give_up:
        await asyncio.sleep(0.25)
        now = rss_mb(pid)
        if abs(now - mark) >= 2:
            mark, since = now, loop.time()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    tmp = tmp_path_factory.mktemp("slow-reader")
    # Two malloc arenas, as the Dockerfile runs it: glibc's default of one arena per
    # thread (8 x cores) makes resident memory wander by tens of MB with thread timing.
    replica = launch("slow-reader", str(tmp / "ledger.db"), tmp, MALLOC_ARENA_MAX="2")
    try:
        wait_ready(replica)
        yield replica
    finally:
        replica.stop()


def small_socket(port: int) -> socket.socket:
    """A client socket with a small receive buffer, as a slow device would have;
    otherwise the kernel's loopback buffers alone hold megabytes of audio."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def stalled_http(port: int, key: str) -> asyncio.StreamWriter:
    """POST a long streamed TTS request and never read the answer."""
    body = json.dumps({"text": LONG, "output_format": "pcm_48000"}).encode()
    reader, writer = await asyncio.open_connection(sock=small_socket(port))
    writer.write(
        b"POST /api/core/local/tts/stream HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        + f"x-api-key: {key}\r\ncontent-length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    return writer


async def stalled_ws(port: int, key: str) -> Any:
    """Open stream-input, push 40 sentences, never read."""
    url = f"ws://127.0.0.1:{port}/api/core/local/tts/stream-input?api_key={key}&output_format=pcm_48000"
    ws = await websockets.connect(url, max_queue=1, max_size=None, sock=small_socket(port))

    async def push() -> None:
        for i in range(40):
            await ws.send(json.dumps({"text": SENTENCE.format(i) + " "}))

    # Sending may block too once the gateway stops reading: that is the point.
    asyncio.get_running_loop().create_task(push())
    return ws


async def normal_client(port: int, key: str, pcm: bytes, until: float, served: list[str]) -> None:
    url = f"ws://127.0.0.1:{port}/api/core/local/asr?api_key={key}"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        while time.monotonic() < until:
            messages, code, _ = await stream(url, om1_frames(pcm, 16000))
            assert code == 1000 and replies(messages), messages
            served.append("asr")
            r = await client.post(
                "/api/core/local/tts/stream",
                # Sentences as long as the stalled clients': Piper's ONNX arena grows to the
                # longest sentence it has seen, once, and that is not what is measured here.
                json={"text": SENTENCE.format(99) + " Now go back.", "output_format": "mp3_44100_128"},
                headers={"x-api-key": key},
            )
            assert r.status_code == 200 and len(r.content) > 1000
            served.append("tts")


async def test_memory_stays_flat_with_stalled_readers_among_busy_clients(gateway: Replica) -> None:
    db = os.fspath(gateway.log.parent / "ledger.db")
    ledger = await open_ledger(db)
    try:
        normal_key, _ = await ledger.create_key("normal", 10**12)
        stalled_key, stalled = await ledger.create_key("stalled", 10**12)
    finally:
        await ledger.close()
    pcm, _ = read_wav(SAMPLES / "two_commands.wav")
    pid = gateway.proc.pid
    served: list[str] = []

    async def phase() -> float:
        """The normal workload for PHASE_S; the peak RSS seen meanwhile."""
        until = time.monotonic() + PHASE_S
        clients = [asyncio.create_task(normal_client(gateway.port, normal_key, pcm, until, served)) for _ in range(4)]
        peak = rss_mb(pid)
        while not all(c.done() for c in clients):
            await asyncio.sleep(0.25)
            peak = max(peak, rss_mb(pid))
        await asyncio.gather(*clients)
        return peak

    async def quiet(seconds: float) -> list[float]:
        """RSS every 0.25 s while only the stalled clients are connected (and still pushing)."""
        samples = []
        for _ in range(int(seconds / 0.25)):
            await asyncio.sleep(0.25)
            samples.append(rss_mb(pid))
        return samples

    await phase()  # warm up: engines and allocator reach their working size
    writers = [await stalled_http(gateway.port, stalled_key) for _ in range(2)]
    sockets = [await stalled_ws(gateway.port, stalled_key) for _ in range(2)]
    await settle(pid)  # they fill every buffer they can, then wait
    stalled_alone = await quiet(8)
    await phase()  # many clients served while the stalled ones hang on
    after_load = await quiet(5)
    print(f"RSS MB while stalled: {min(stalled_alone):.0f}-{max(stalled_alone):.0f}; after load {max(after_load):.0f}")

    # The stalled clients still hold their connections; what has the gateway done for them?
    # They never read, so no orderly close can finish: drop the connections.
    for w in writers:
        w.transport.abort()
    for ws in sockets:
        ws.transport.abort()
    await asyncio.sleep(0.1)
    ledger = await open_ledger(db)
    try:
        for _ in range(200):  # the HTTP streams settle when the gateway sees them go
            records = await ledger.usage(key_id=stalled.key_id)
            if sum(r.idempotency_key.startswith("tts-stream:") for r in records) == 2:
                break
            await asyncio.sleep(0.05)
    finally:
        await ledger.close()

    assert served.count("asr") >= 12 and served.count("tts") >= 12, served
    # Each stalled stream had only part of its 40 sentences synthesized (and billed): what
    # fits in the kernel's send buffer (net.ipv4.tcp_wmem, at most 4 MB here: ~10 sentences
    # of 48 kHz PCM), the transport's 64 KiB and the sentence being written; not the rest.
    http_records = [r for r in records if r.idempotency_key.startswith("tts-stream:")]
    assert len(http_records) == 2 and all(r.characters < len(LONG) // 2 for r in http_records), [
        r.characters for r in http_records
    ]
    ws_records = [r for r in records if r.idempotency_key.startswith("tts-ws:")]
    assert len(ws_records) <= 2 * 20, len(ws_records)
    # Flat: however long the stalled clients wait and keep pushing, nothing more is held for them.
    assert max(stalled_alone) - min(stalled_alone) < FLAT_MB, stalled_alone
    assert max(after_load) - min(after_load) < FLAT_MB, after_load
