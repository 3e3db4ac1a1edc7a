#!/usr/bin/env python3
"""Usage records per second each ledger backend commits under concurrent streams.

For each backend (SQLite in a temporary file, PostgreSQL in a fresh database
that is dropped afterwards), each level N (default 1, 10, 50) and each write
path, N asyncio tasks share one opened ledger, as the streams of one gateway
replica do, and loop for a few seconds:

* ``reserve+settle``: what a stream does per utterance. ``reserve`` holds
  credit for a whole utterance (15 s of google audio), then ``settle`` drops
  the reservation and commits the usage record (``UsageIn.asr``, 1.47 s) and
  the debit in one transaction;
* ``record_usage``: the plain write, without a reservation.

Each level runs twice: every stream on its own account (``own``: the usual
case, many customers) and every stream on one shared account (``shared``: one
fleet's keys on one account; every money transaction of that account takes
the same row lock, in PostgreSQL as in SQLite).

Reported per cell: committed records/s inside the measured window, p50/p99
latency of ``settle`` (or ``record_usage``) and of ``reserve``, and the CPU the
machine and this process used. After each cell the ledger is checked: every
account's balance fell by exactly its records' cost and no reservation holds
credit.

What a stream needs: one record per utterance. An utterance needs at least
``start_ms`` of speech and ends after ``silence_ms`` of silence (620 ms at the
defaults), so even a stream of back-to-back two-word commands needs under
1.6 records/s, and ordinary speech about 0.4/s (``samples/two_commands.wav``:
2 utterances in 5.1 s). The tables divide each throughput by these rates:
how many such streams one gateway's ledger connection(s) could keep up with.

    /work/venv/bin/python bench/ledger.py            # full run, about 75 s
    /work/venv/bin/python bench/ledger.py --quick    # smoke run, about 17 s
    /work/venv/bin/python bench/ledger.py --help

PostgreSQL: ``--postgres URL`` (an account allowed to CREATE DATABASE), else
``SPEECH_TEST_POSTGRES_URL``, else ``postgresql://postgres@127.0.0.1:5432/postgres``;
skipped with a note when unreachable. Results: tables on stdout and
``bench/results/ledger.json`` (git-ignored). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from speech.metering.factory import open_ledger  # noqa: E402
from speech.metering.ledger import Ledger  # noqa: E402
from speech.metering.prices import PriceTable  # noqa: E402
from speech.metering.records import UsageIn  # noqa: E402
from speech.settings import LimitSettings, PriceSettings, VadSettings  # noqa: E402

DEFAULT_OUT = HERE / "results" / "ledger.json"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"

PRICES = PriceTable.from_settings(PriceSettings())
ROUTE = "google"  # priced: 50 OMCU/min
VAD = VadSettings()
WANT = PRICES.asr_cost(ROUTE, VAD.max_utterance_ms)  # what asr_ws reserves per utterance
AUDIO_MS = 1470  # the first utterance of samples/two_commands.wav, as billed
RECEIVED_MS = 2200
COST = PRICES.asr_cost(ROUTE, AUDIO_MS)
TTL_S = LimitSettings().reservation_ttl_s
BALANCE = 10**15  # never runs out

# Records one stream commits per second (see the module docstring).
NEED_TYPICAL = 2 / 5.123  # samples/two_commands.wav
NEED_WORST = 1000 / (VAD.start_ms + VAD.silence_ms)

MODES = ("reserve+settle", "record_usage")
LAYOUTS = ("own", "shared")


# ---------------------------------------------------------------- machine


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model or platform.processor(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
    }


def machine_busy_seconds() -> float:
    """CPU seconds every process on the machine has used (from /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().split()[1:9]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return sum(int(x) for x in (user, nice, system, irq, softirq, steal)) / os.sysconf("SC_CLK_TCK")


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


# ---------------------------------------------------------------- backends


@contextlib.asynccontextmanager
async def sqlite_target() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    # Under the system temp dir; the JSON records which filesystem it was on.
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as tmp:
        path = str(Path(tmp) / "ledger.db")
        yield path, {"path": path, "synchronous": "FULL", "journal_mode": "WAL"}


@contextlib.asynccontextmanager
async def postgres_target(admin_url: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    import asyncpg

    name = f"ledger_bench_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_url, timeout=5)
    try:
        version = await conn.fetchval("SHOW server_version")
        sync_commit = await conn.fetchval("SHOW synchronous_commit")
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    parts = urlsplit(admin_url)
    url = urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
    try:
        yield (
            url,
            {
                "host": f"{parts.hostname}:{parts.port or 5432}",
                "database": name,
                "server_version": version,
                "synchronous_commit": sync_commit,
                "pool": "1-10 connections (open_ledger default)",
            },
        )
    finally:
        conn = await asyncpg.connect(admin_url, timeout=5)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def postgres_reachable(admin_url: str) -> str | None:
    """None if the server answers, else why not."""
    try:
        import asyncpg

        conn = await asyncpg.connect(admin_url, timeout=5)
        await conn.close()
    except Exception as exc:  # noqa: BLE001 - any failure means "no server here"
        return f"{type(exc).__name__}: {exc}"
    return None


# ---------------------------------------------------------------- one cell


async def make_keys(ledger: Ledger, n: int, layout: str, tag: str) -> list[tuple[str, str]]:
    """(key_id, account_id) for each of the n streams."""
    out = []
    if layout == "shared":
        account = await ledger.create_account(f"bench {tag}", BALANCE)
        for i in range(n):
            _, key = await ledger.create_key(f"bench {tag} {i}", account_id=account.account_id)
            out.append((key.key_id, key.account_id))
    else:
        for i in range(n):
            _, key = await ledger.create_key(f"bench {tag} {i}", BALANCE)
            out.append((key.key_id, key.account_id))
    return out


async def run_cell(
    ledger: Ledger, backend: str, mode: str, n: int, layout: str, duration: float, warmup: float
) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    keys = await make_keys(ledger, n, layout, tag)
    settle_lat: list[float] = []
    reserve_lat: list[float] = []
    committed = [0] * n  # every commit, for the ledger check
    in_window = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    t_measure, t_end = start + warmup, start + warmup + duration

    async def one_stream(idx: int) -> None:
        nonlocal in_window
        key_id, _ = keys[idx]
        i = 0
        while (t0 := loop.time()) < t_end:
            rid = f"asr:{tag}:{idx}:{i}"
            usage = UsageIn.asr(
                PRICES,
                idempotency_key=rid,
                key_id=key_id,
                provider=ROUTE,
                engine="local",
                audio_ms=AUDIO_MS,
                received_ms=RECEIVED_MS,
            )
            if mode == "reserve+settle":
                granted = await ledger.reserve(rid, key_id=key_id, want_uomcu=WANT, ttl_s=TTL_S)
                assert granted == WANT
                t1 = loop.time()
                _, new = await ledger.settle(rid, usage)
            else:
                t1 = t0
                _, new = await ledger.record_usage(usage)
            t2 = loop.time()
            assert new
            committed[idx] += 1
            if t0 >= t_measure:
                settle_lat.append(t2 - t1)
                if mode == "reserve+settle":
                    reserve_lat.append(t1 - t0)
            if t_measure <= t2 < t_end:
                in_window += 1
            i += 1

    busy0, own0 = machine_busy_seconds(), time.process_time()
    await asyncio.gather(*(one_stream(i) for i in range(n)))
    elapsed = loop.time() - start
    busy, own = machine_busy_seconds() - busy0, time.process_time() - own0

    # The ledger agrees: each account lost exactly its records' cost, nothing is held.
    per_account: dict[str, int] = {}
    for (_, account_id), count in zip(keys, committed, strict=True):
        per_account[account_id] = per_account.get(account_id, 0) + count
    consistent = True
    for account_id, count in per_account.items():
        balance = await ledger.balance(account_id)
        available = await ledger.available(account_id)
        consistent &= balance == BALANCE - count * COST and available == balance

    settle_lat.sort()
    reserve_lat.sort()
    rate = in_window / duration

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 3)

    return {
        "backend": backend,
        "mode": mode,
        "streams": n,
        "accounts": layout,
        "records_per_s": round(rate, 1),
        "records_in_window": in_window,
        "records_total": sum(committed),
        "settle_ms": {"p50": ms(percentile(settle_lat, 0.5)), "p99": ms(percentile(settle_lat, 0.99))},
        "reserve_ms": {"p50": ms(percentile(reserve_lat, 0.5)), "p99": ms(percentile(reserve_lat, 0.99))},
        "streams_fed_typical": int(rate / NEED_TYPICAL),
        "streams_fed_worst": int(rate / NEED_WORST),
        "machine_cpu_cores": round(busy / elapsed, 2),
        "bench_process_cpu_cores": round(own / elapsed, 2),
        "ledger_consistent": consistent,
    }


async def run_paced(
    ledger: Ledger, backend: str, m: int, per_stream: float, duration: float, warmup: float
) -> dict[str, Any]:
    """Open loop: m streams, each committing one utterance (reserve → settle)
    every 1/per_stream s on its own account, at random phases. The latency a
    reply waits for its record at that load, rather than at saturation."""
    tag = uuid.uuid4().hex[:8]
    keys = await make_keys(ledger, m, "own", tag)
    period = 1 / per_stream
    latencies: list[float] = []
    late: list[float] = []
    in_window = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    t_measure, t_end = start + warmup, start + warmup + duration
    rng = random.Random(0)
    phases = [rng.uniform(0, period) for _ in range(m)]

    async def one_stream(idx: int) -> None:
        nonlocal in_window
        key_id, _ = keys[idx]
        due = start + phases[idx]
        i = 0
        while due < t_end:
            await asyncio.sleep(max(0.0, due - loop.time()))
            t0 = loop.time()
            rid = f"asr:{tag}:{idx}:{i}"
            usage = UsageIn.asr(
                PRICES,
                idempotency_key=rid,
                key_id=key_id,
                provider=ROUTE,
                engine="local",
                audio_ms=AUDIO_MS,
                received_ms=RECEIVED_MS,
            )
            await ledger.reserve(rid, key_id=key_id, want_uomcu=WANT, ttl_s=TTL_S)
            t1 = loop.time()
            await ledger.settle(rid, usage)
            t2 = loop.time()
            if t0 >= t_measure:
                latencies.append(t2 - t1)
                late.append(t0 - due)
            if t_measure <= t2 < t_end:
                in_window += 1
            due += period
            i += 1

    await asyncio.gather(*(one_stream(i) for i in range(m)))
    latencies.sort()
    late.sort()

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 3)

    return {
        "backend": backend,
        "streams": m,
        "per_stream_records_per_s": round(per_stream, 3),
        "offered_records_per_s": round(m * per_stream, 1),
        "records_per_s": round(in_window / duration, 1),
        "settle_ms": {"p50": ms(percentile(latencies, 0.5)), "p99": ms(percentile(latencies, 0.99))},
        "start_late_ms": {"p50": ms(percentile(late, 0.5)), "p99": ms(percentile(late, 0.99))},
        "samples": len(latencies),
    }


async def run_backend(
    backend: str, target: str, levels: list[int], duration: float, warmup: float, out: list[dict[str, Any]]
) -> None:
    ledger = await open_ledger(target)
    try:
        for mode in MODES:
            for layout in LAYOUTS:
                for n in levels:
                    cell = await run_cell(ledger, backend, mode, n, layout, duration, warmup)
                    out.append(cell)
                    print_row(cell)
    finally:
        await ledger.close()


async def run_backend_paced(
    backend: str, target: str, m: int, rates: list[float], duration: float, warmup: float, out: list[dict[str, Any]]
) -> None:
    ledger = await open_ledger(target)
    try:
        for rate in rates:
            out.append(await run_paced(ledger, backend, m, rate, duration, warmup))
    finally:
        await ledger.close()


# ---------------------------------------------------------------- output

HEADER = (
    "| backend | write per utterance | accounts | streams (tasks) | records/s | write p50 / p99 ms "
    "| reserve p50 / p99 ms | streams fed at 0.4 / 1.6 rec/s | ok |"
)


def fmt(v: float | None) -> str:
    return "-" if v is None else (f"{v:.1f}" if v >= 10 else f"{v:.2f}")


def print_row(c: dict[str, Any]) -> None:
    s, r = c["settle_ms"], c["reserve_ms"]
    write = "reserve → settle" if c["mode"] == "reserve+settle" else "record_usage"
    print(
        f"| {c['backend']} | {write} | {c['accounts']} | {c['streams']} | {c['records_per_s']:.0f} "
        f"| {fmt(s['p50'])} / {fmt(s['p99'])} | {fmt(r['p50'])} / {fmt(r['p99'])} "
        f"| {c['streams_fed_typical']} / {c['streams_fed_worst']} | {'yes' if c['ledger_consistent'] else 'NO'} |",
        flush=True,
    )


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    levels = [int(x) for x in args.levels.split(",")]
    duration = 0.4 if args.quick else args.duration
    warmup = 0.1 if args.quick else 0.3
    # The paced runs need longer windows: a stream at 0.4/s commits once in 2.5 s.
    paced_rates = [NEED_WORST] if args.quick else [NEED_TYPICAL, NEED_WORST]
    paced_s = 1.0 if args.quick else 3.0
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    admin = args.postgres or os.environ.get("SPEECH_TEST_POSTGRES_URL") or DEFAULT_PG
    info = machine()
    print(f"# ledger bench: {info['nproc']} CPUs ({info['cpu_model']}), Python {info['python']}")
    print(
        f"# {duration:g} s measured (+{warmup:g} s warm-up) per cell; one usage record = {AUDIO_MS} ms of "
        f"{ROUTE} audio ({COST} µOMCU); reserve asks {WANT} µOMCU"
    )
    print(
        f"# a stream needs ~{NEED_TYPICAL:.1f} records/s (ordinary speech), at most {NEED_WORST:.1f}/s "
        f"(utterances of start_ms {VAD.start_ms} + silence_ms {VAD.silence_ms} back to back)\n"
    )
    cells: list[dict[str, Any]] = []
    targets: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    started = time.monotonic()
    print(HEADER)
    print("|---|---|---|---:|---:|---:|---:|---:|---|")
    paced: list[dict[str, Any]] = []
    for backend in backends:
        if backend not in ("sqlite", "postgres"):
            raise SystemExit(f"unknown backend {backend!r} (sqlite, postgres)")
        if backend == "postgres" and (why := await postgres_reachable(admin)) is not None:
            skipped[backend] = why
            continue
        target_cm = sqlite_target() if backend == "sqlite" else postgres_target(admin)
        async with target_cm as (target, facts):
            targets[backend] = facts
            await run_backend(backend, target, levels, duration, warmup, cells)
            if args.paced:
                await run_backend_paced(backend, target, args.paced, paced_rates, paced_s, warmup, paced)
    for backend, why in skipped.items():
        print(f"\n{backend}: skipped, server not reachable ({why})")
    if paced:
        print(
            f"\nPaced (open loop, {paced_s:g} s): {args.paced} streams on their own accounts, each committing "
            "one utterance (reserve → settle) at a fixed rate, at random phases:\n"
        )
        print(
            "| backend | streams | rec/s per stream | offered rec/s | committed rec/s | settle p50 / p99 ms "
            "| behind schedule p99 ms |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for c in paced:
            print(
                f"| {c['backend']} | {c['streams']} | {c['per_stream_records_per_s']:.1f} "
                f"| {c['offered_records_per_s']:.0f} | {c['records_per_s']:.0f} "
                f"| {fmt(c['settle_ms']['p50'])} / {fmt(c['settle_ms']['p99'])} | {fmt(c['start_late_ms']['p99'])} |"
            )
    wall = time.monotonic() - started

    print(
        "\nHow to read it: the closed-loop rows run N tasks flat out, so records/s is the backend's ceiling "
        "for one gateway process and the latency there is mostly queueing at saturation. 'streams fed' "
        "divides that ceiling by what one real-time stream commits (0.4 records/s ordinary speech, 1.6/s "
        "worst case). The paced rows show the latency at a real load. A reply waits for its record's "
        "commit (settle); compare that with a local decode (~500 ms) or a cloud round trip (tens of ms)."
    )
    bad = [c for c in cells if not c["ledger_consistent"]]
    if bad:
        print(f"\nWARNING: {len(bad)} cells left the ledger inconsistent")
    result = {
        "bench": "ledger",
        "machine": info,
        "settings": {
            "levels": levels,
            "duration_s": duration,
            "warmup_s": warmup,
            "route": ROUTE,
            "record_audio_ms": AUDIO_MS,
            "record_cost_uomcu": COST,
            "reserve_want_uomcu": WANT,
            "reservation_ttl_s": TTL_S,
            "quick": args.quick,
        },
        "per_stream_need_records_per_s": {"typical": round(NEED_TYPICAL, 3), "worst": round(NEED_WORST, 3)},
        "targets": targets,
        "skipped": skipped,
        "cells": cells,
        "paced": paced,
        "wall_s": round(wall, 1),
    }
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--quick", action="store_true", help="0.4 s per cell (about 17 s in all)")
    p.add_argument("--duration", type=float, default=2.0, help="measured seconds per cell (default 2)")
    p.add_argument("--levels", default="1,10,50", help="concurrent streams per cell (default 1,10,50)")
    p.add_argument(
        "--paced", type=int, default=200, help="streams in the paced run at 1.6 records/s each (0 skips; default 200)"
    )
    p.add_argument("--backends", default="sqlite,postgres", help="default sqlite,postgres")
    p.add_argument("--postgres", metavar="URL", help="admin URL (default $SPEECH_TEST_POSTGRES_URL or local)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"JSON results (default {DEFAULT_OUT})")
    args = p.parse_args()
    result = asyncio.run(main_async(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {out} ({result['wall_s']:.0f} s)")
    return 0 if all(c["ledger_consistent"] for c in result["cells"]) else 1


if __name__ == "__main__":
    sys.exit(main())
