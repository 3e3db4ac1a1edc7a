"""A lean Riva-protocol upstream for the load bench: answers at once and
reports its own time.

``python -m bench.fake_upstream`` serves ``RivaSpeechRecognition`` and
``RivaSpeechSynthesis`` (the real gRPC services from ``nvidia-riva-client``'s
stubs) on a free loopback port, prints ``{"url": "127.0.0.1:PORT"}`` and runs
until its stdin closes.

Unlike the test suite's fake (``tests/providers/riva/fake_riva.py``) it keeps
nothing per call, so thousands of streams over minutes do not grow it, and it
does no work per audio message beyond counting bytes:

* ``StreamingRecognize``: read the config and the audio; when the client
  half-closes, answer one final whose transcript is ``bench up_us=<N>``,
  where N is the fake's own time in microseconds, from the moment it saw the
  end of the request stream to the moment it handed the final to gRPC. The
  load generator reads it back from the gateway's ``asr_reply`` and
  subtracts it ("minus the upstream's own time").
* ``Synthesize``: a 440 Hz tone of 50 ms per character at the asked rate,
  memoized per (text, rate), so every answer costs the same.
"""

from __future__ import annotations

import asyncio
import functools
import json
import resource
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import numpy as np
from riva.client.proto import riva_asr_pb2 as rasr
from riva.client.proto import riva_asr_pb2_grpc as rasr_grpc
from riva.client.proto import riva_tts_pb2 as rtts
from riva.client.proto import riva_tts_pb2_grpc as rtts_grpc

MS_PER_CHAR = 50


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@functools.lru_cache(maxsize=16)
def tone(text: str, rate: int) -> bytes:
    n = rate * MS_PER_CHAR * len(text) // 1000
    t = np.arange(n) / rate
    return (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()


class Stats:
    def __init__(self) -> None:
        self.asr_calls = 0
        self.asr_messages = 0
        self.asr_bytes = 0
        self.tts_calls = 0


class Recognition(rasr_grpc.RivaSpeechRecognitionServicer):
    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    async def StreamingRecognize(
        self, request_iterator: AsyncIterator[rasr.StreamingRecognizeRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[rasr.StreamingRecognizeResponse]:
        st = self.stats
        st.asr_calls += 1
        audio = 0
        async for req in request_iterator:
            audio += len(req.audio_content)
            st.asr_messages += 1
        st.asr_bytes += audio
        ended = time.perf_counter()
        # The fake's own time: end of the request stream -> final handed to gRPC
        # (building the message is the only work left after this reading).
        up_us = round((time.perf_counter() - ended) * 1e6)
        alt = rasr.SpeechRecognitionAlternative(transcript=f"bench up_us={up_us}", confidence=0.9)
        result = rasr.StreamingRecognitionResult(alternatives=[alt], is_final=True, audio_processed=audio / 32000)
        yield rasr.StreamingRecognizeResponse(results=[result])


class Synthesis(rtts_grpc.RivaSpeechSynthesisServicer):
    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    async def Synthesize(
        self, request: rtts.SynthesizeSpeechRequest, context: grpc.aio.ServicerContext
    ) -> rtts.SynthesizeSpeechResponse:
        self.stats.tts_calls += 1
        return rtts.SynthesizeSpeechResponse(audio=tone(request.text, request.sample_rate_hz or 22050))

    async def SynthesizeOnline(
        self, request_iterator: AsyncIterator[rtts.SynthesizeSpeechRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[rtts.SynthesizeSpeechResponse]:
        async for req in request_iterator:
            self.stats.tts_calls += 1
            yield rtts.SynthesizeSpeechResponse(audio=tone(req.text, req.sample_rate_hz or 22050))


async def serve(stop: asyncio.Future[Any] | None = None) -> None:
    stats = Stats()
    server = grpc.aio.server(
        options=[("grpc.max_concurrent_streams", 1 << 20), ("grpc.max_receive_message_length", 64 << 20)]
    )
    rasr_grpc.add_RivaSpeechRecognitionServicer_to_server(Recognition(stats), server)
    rtts_grpc.add_RivaSpeechSynthesisServicer_to_server(Synthesis(stats), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(json.dumps({"url": f"127.0.0.1:{port}"}), flush=True)
    loop = asyncio.get_running_loop()
    if stop is None:
        # Runs until the bench closes our stdin.
        await loop.run_in_executor(None, sys.stdin.read)
    else:
        await stop
    print(json.dumps(vars(stats)), file=sys.stderr, flush=True)
    await server.stop(None)


def main() -> int:
    raise_fd_limit()
    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
