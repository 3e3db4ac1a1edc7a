"""Usage records as CSV: one format for the usage API and the ``speech usage --csv`` CLI.

Every column of :meth:`~speech.metering.records.UsageRecord.to_json`; the LLM
ones (``model``, ``input_tokens``, ``output_tokens``,
``output_unit_price_uomcu``, ``estimated``) are empty for ASR and TTS records.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from typing import Any

USAGE_CSV_COLUMNS = (
    "created",
    "id",
    "account_id",
    "key_id",
    "kind",
    "provider",
    "engine",
    "quantity",
    "unit",
    "unit_price_uomcu",
    "cost_uomcu",
    "cost",
    "received_seconds",
    "upstream_characters",
    "idempotency_key",
    "model",
    "input_tokens",
    "output_tokens",
    "output_unit_price_uomcu",
    "estimated",
)


def usage_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    """A header line and one line per record (``UsageRecord.to_json()`` dicts)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=USAGE_CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
