"""JSON off the event loop when it is big.

Chat bodies carry images as base64 and answers can be long; decoding or
encoding megabytes takes milliseconds to tens of milliseconds, which would
stall every other stream of the gateway. Documents above
:data:`INLINE_LIMIT` bytes go to a worker thread; small ones (nearly all)
are handled inline, where a thread hop would cost more than the work.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

INLINE_LIMIT = 256 * 1024


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode(data: bytes) -> Any:
    """Strict JSON: NaN and Infinity, which Python would accept, are refused."""
    return json.loads(data, parse_constant=_reject_constant)


def encode(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


async def loads(data: bytes) -> Any:
    return decode(data) if len(data) <= INLINE_LIMIT else await asyncio.to_thread(decode, data)


async def dumps(value: Any, size_hint: int) -> bytes:
    """``size_hint``: the size of the document it was decoded from."""
    return encode(value) if size_hint <= INLINE_LIMIT else await asyncio.to_thread(encode, value)
