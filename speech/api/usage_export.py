"""Usage history as JSON or CSV, filtered by time, key and kind.

Query: ``since`` (inclusive) and ``until`` (exclusive) as ISO-8601 times,
``key_id``, ``kind`` (``asr`` | ``tts`` | ``llm``), ``limit`` (1-10000,
default 100), ``format`` (``json`` | ``csv``; ``Accept: text/csv`` also
selects CSV). CSV rows have every column; the LLM ones (``model``,
``input_tokens``, ``output_tokens``, ``output_unit_price_uomcu``,
``estimated``) are empty for ASR and TTS records.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from speech.api.gateway import Gateway
from speech.errors import BadRequest
from speech.metering.checks import KINDS
from speech.metering.export import usage_csv


async def usage_response(gateway: Gateway, request: Request, *, account_id: str | None) -> Response:
    q = request.query_params
    try:
        limit = int(q.get("limit", "100"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 10_000:
        raise BadRequest("'limit' must be an integer between 1 and 10000")
    kind = q.get("kind") or None
    if kind is not None and kind not in KINDS:
        raise BadRequest("'kind' must be 'asr', 'tts' or 'llm'")
    fmt = q.get("format") or ("csv" if "text/csv" in request.headers.get("accept", "") else "json")
    if fmt not in ("json", "csv"):
        raise BadRequest("'format' must be 'json' or 'csv'")
    try:
        records = await gateway.ledger.usage(
            account_id=account_id,
            key_id=q.get("key_id") or None,
            kind=kind,
            since=q.get("since") or None,
            until=q.get("until") or None,
            limit=limit,
        )
    except ValueError as exc:
        raise BadRequest("'since' and 'until' must be ISO-8601 times such as 2026-01-31T12:00:00Z") from exc
    rows = [r.to_json() for r in records]
    if fmt == "json":
        return JSONResponse({"account_id": account_id, "usage": rows})
    return Response(
        usage_csv(rows),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": 'attachment; filename="usage.csv"'},
    )
