"""Scraping ``GET /metrics`` in the tests: the exposition parsed with
prometheus_client's own parser."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


class Scrape:
    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: list[Sample] = [s for f in text_string_to_metric_families(text) for s in f.samples]

    def select(self, name: str, **labels: str) -> list[Sample]:
        return [s for s in self.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples named ``name`` whose labels include ``labels`` (0 if none)."""
        return sum(s.value for s in self.select(name, **labels))


async def scrape(base_url: str, **kw: Any) -> Scrape:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        r = await client.get("/metrics", **kw)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return Scrape(r.text)
