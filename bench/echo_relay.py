"""The side-by-side baseline: a plain websocket relay in a few lines of ``websockets``.

``python -m bench.echo_relay`` listens on a free loopback port, prints
``{"port": N}`` and serves until its stdin closes. Per connection it does the
per-frame work any relay of OM1's format must do, and no more: parse the JSON
frame, base64-decode the audio, look at it. An utterance is audio that is not
digital silence; after ``SILENT_FRAMES`` all-zero frames (600 ms, the
gateway's 500 ms silence window rounded up to 200 ms frames) it replies
``{"asr_reply": "echo"}``. ``{"type": "CloseStream"}`` closes normally. No
VAD, no resampling, no upstream call, no ledger: the floor of what a Python
websocket relay costs on this machine, so the gateway's numbers can be read
as a ratio measured in the same run.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys

from websockets.asyncio.server import ServerConnection, serve

from bench.fake_upstream import raise_fd_limit

SILENT_FRAMES = 3
REPLY = json.dumps({"asr_reply": "echo"})


async def relay(ws: ServerConnection) -> None:
    speaking, silent = False, 0
    async for message in ws:
        frame = json.loads(message)
        if "type" in frame:  # KeepAlive, CloseStream
            if frame["type"] == "CloseStream":
                break
            continue
        pcm = base64.b64decode(frame["audio"])
        if pcm.count(0) != len(pcm):  # any non-zero byte: speech
            speaking, silent = True, 0
        elif speaking:
            silent += 1
            if silent == SILENT_FRAMES:
                speaking = False
                await ws.send(REPLY)
    await ws.close(1000)


async def main_async() -> None:
    async with serve(relay, "127.0.0.1", 0, max_size=None, compression=None, backlog=4096) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(json.dumps({"port": port}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


def main() -> int:
    raise_fd_limit()
    asyncio.run(main_async())
    return 0


if __name__ == "__main__":
    sys.exit(main())
