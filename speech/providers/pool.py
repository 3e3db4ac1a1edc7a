"""A bounded thread pool for blocking inference, kept off the event loop.

``run`` refuses new work with :class:`~speech.errors.EngineOverloaded` once
``queue`` jobs are waiting, so a burst degrades into clear errors instead of
unbounded latency and memory. CTranslate2 and onnxruntime release the GIL
while they compute, so the loop keeps serving frames during a decode.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from speech.errors import EngineOverloaded

T = TypeVar("T")


class InferencePool:
    def __init__(self, name: str, workers: int, queue: int) -> None:
        self.name = name
        self.workers = workers
        self.queue = queue
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"{name}-")
        self._in_flight = 0
        self._lock = threading.Lock()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def has_spare_worker(self, keep_free: int = 1) -> bool:
        """True when more than ``keep_free`` workers are idle (with one worker: when it is idle)."""
        return self._in_flight < max(1, self.workers - keep_free)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        if self._in_flight >= self.workers + self.queue:
            raise EngineOverloaded(f"{self.name} engine is overloaded; try again shortly")
        # Counted until the thread finishes, even if the caller is cancelled
        # first: a cancelled await does not stop a running decode.
        with self._lock:
            self._in_flight += 1
        future = self._executor.submit(fn, *args)
        future.add_done_callback(self._done)
        return await asyncio.wrap_future(future)

    def _done(self, _future: object) -> None:
        with self._lock:
            self._in_flight -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
