"""``python -m bench``: the whole performance suite, one table.

1. **ASR load** at each N of ``--levels``: a fresh gateway process
   (``python -m speech serve``, generated TOML, own SQLite ledger, one key,
   every ASR route to Riva) relaying to :mod:`bench.fake_upstream`, driven by
   :mod:`bench.load`; then the **echo relay** (:mod:`bench.echo_relay`) at the
   same N with the same frames. Escalation stops after the first level the
   gateway does not sustain (``--keep-going`` runs them all).
2. **Profile**: one more gateway run at the highest level it was run at with
   ``py-spy record`` attached for the steady window; the top functions go to
   ``bench/results/profile_gateway.txt`` (skipped when py-spy is missing).
3. **TTS burst**: :mod:`bench.tts_burst`, gateway against the Riva adapter
   called directly, same fake.
4. **Local engine**: ``bench/local_asr.py`` (RTF and end-of-speech latency on
   the recordings in ``../shared/samples``), in its own process.

Results: the table on stdout, ``bench/results/suite.json`` (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import load, tts_burst
from bench.adapters import Processes, cpu_seconds, machine, rss_mb, to_toml
from bench.fake_upstream import raise_fd_limit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SAMPLES = ROOT.parent / "shared" / "samples"
RESULTS = HERE / "results"
LOCAL_FILES = "goforward.wav,librivox-0880.wav,librivox-0890.wav"  # the recordings of 5 s or less of speech

TARGETS = {
    "streams": 2000,
    "asr_p99_ms": 50.0,
    "cpu_ms_per_audio_s": 1.0,
    "tts_p50_ms": 2.0,
    "tts_p99_ms": 10.0,
    "local_p50_ms": 500.0,
    "local_p99_ms": 800.0,
}


class Child:
    """A helper process that prints one JSON line when ready and stops when its stdin closes."""

    def __init__(self, module: str, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPEECH_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
            text=True,
            cwd=ROOT,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"{module} did not start:\n{log.read_text()[-3000:]}")
        self.info: dict[str, Any] = json.loads(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def gateway_toml(upstream: str, db: str) -> str:
    return to_toml(
        {
            "server.host": "127.0.0.1",
            "server.port": 0,
            "server.db": db,
            "riva.url": upstream,
            # Every route goes to the Riva fake, so no local model loads.
            "routes.asr.riva": ["riva"],
            "routes.asr.google": ["riva"],
            "routes.asr.local": ["riva"],
            "routes.tts.riva": ["riva"],
            "routes.tts.elevenlabs": ["riva"],
            "routes.tts.local": ["riva"],
        }
    )


async def make_key(db: str) -> str:
    from speech.metering.sqlite import SqliteLedger

    ledger = await SqliteLedger.open(db)
    try:
        key, _ = await ledger.create_key("bench", 10**15)
    finally:
        await ledger.close()
    return key


def machine_cpu() -> tuple[float, float]:
    """CPU seconds the whole machine spent in processes (user, nice, system,
    steal) and in interrupts (irq, softirq: loopback TCP is mostly softirq)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = Path("/proc/stat").read_text().split()[1:9]
    tck = os.sysconf("SC_CLK_TCK")
    return (int(user) + int(nice) + int(system) + int(steal)) / tck, (int(irq) + int(softirq)) / tck


class Box:
    """CPU of every process on the machine, so other people's work shows."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.start = self._read()

    def _read(self) -> tuple[float, ...]:
        ours = sum(cpu_seconds(p) for p in self.pids)
        return *machine_cpu(), ours, time.process_time(), time.perf_counter()

    def stop(self) -> dict[str, float]:
        busy, irq, ours, me, wall = (b - a for a, b in zip(self.start, self._read(), strict=True))
        return {
            # Other processes on the machine (other people's work, our own py-spy).
            "other_cores": round(max(0.0, busy - ours - me) / wall, 3),
            "softirq_cores": round(irq / wall, 3),
            "generator_cores": round(me / wall, 3),
            "wall_s": round(wall, 2),
        }


def log(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------ sections


async def asr_level(
    target: str, n: int, plan: load.Plan, ctx: dict[str, Any], tmp: Path, profile_s: float = 0.0
) -> dict[str, Any]:
    fake: Child = ctx["fake"]
    if target == "gateway":
        procs = Processes(tmp)
        config = tmp / "gateway.toml"
        config.write_text(gateway_toml(fake.info["url"], ctx["db"]))
        port = procs.start_gateway(config)
        assert procs.gateway is not None
        pid = procs.gateway.pid
        path = f"/api/core/riva/asr?api_key={ctx['key']}"
        stop = procs.stop
    else:
        echo = Child("bench.echo_relay", tmp / "echo.log")
        port, pid, path, stop = echo.info["port"], echo.pid, "/", echo.stop
    try:
        idle0 = cpu_seconds(pid)
        await asyncio.sleep(1.0)
        idle = cpu_seconds(pid) - idle0
        probe = load.Probe(cpu_s=lambda: cpu_seconds(pid), rss_mb=lambda: rss_mb(pid)["VmRSS"])
        spy: list[subprocess.Popen[bytes]] = []
        raw = RESULTS / "profile_gateway.raw.txt"

        def start_profile() -> None:
            exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            cmd = [exe, "record", "-p", str(pid), "-d", str(int(profile_s)), "-r", "100", "--nonblocking", "--gil"]
            spy.append(
                subprocess.Popen([*cmd, "-f", "raw", "-o", str(raw)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            )

        box = Box([pid, fake.pid])
        fake0 = cpu_seconds(fake.pid)
        row = await load.run_level(
            target=target,
            host="127.0.0.1",
            port=port,
            path=path,
            plan=plan,
            n=n,
            probe=probe,
            warmup_s=ctx["warmup_s"],
            log=log,
            on_window_start=start_profile if profile_s else None,
        )
        row.update(box.stop())
        row["fake_cores"] = round((cpu_seconds(fake.pid) - fake0) / row["wall_s"], 3)
        row["idle_cpu_ms_per_s"] = round(idle * 1000, 2)
        if spy:
            _, err = spy[0].communicate(timeout=profile_s + 30)
            row["profile"] = summarize_profile(raw) if raw.exists() else {"error": err.decode()[-500:]}
    finally:
        stop()
    return row


def summarize_profile(raw: Path) -> dict[str, Any]:
    """Self and inclusive shares of py-spy's collapsed stacks, by function."""
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        total += c
        frames = [_fn(f) for f in stack.split(";")]
        self_c[frames[-1]] += c
        for f in set(frames):
            incl[f] += c
    top = 25

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(f, round(100 * c / total, 1)) for f, c in counter.most_common(top)] if total else []

    for f in [f for f in incl if f.startswith(SCAFFOLD) or any(w in f for w in SCAFFOLD_FILES)]:
        del incl[f]  # frames every sample passes through say nothing
    return {"samples": total, "self": share(self_c), "inclusive": share(incl)}


SCAFFOLD = ("<module>", "_run_code", "_run_module_as_main", "Thread.", "Handle._run ", "BaseEventLoop.")
SCAFFOLD_FILES = ("uvicorn/server.py", "uvicorn/_compat.py", "asyncio/runners.py", "speech/cli/", "speech/__main__")


def _fn(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (to/file.py)``."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3.11/", str(ROOT) + "/"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{name} ({where})" if where else name


def write_profile_text(row: dict[str, Any], path: Path) -> None:
    prof = row.get("profile") or {}
    lines = [
        f"py-spy profile of the gateway: {row['streams']} real-time streams, "
        f"{row['window_s']:.0f} s steady window, 100 Hz, {prof.get('samples', 0)} samples "
        "(--gil: % of the samples in which a gateway thread held the GIL, i.e. of its Python work;",
        "waits, and native code that releases the GIL, are not counted)",
        "",
        "Top functions by own time (self %):",
        *(f"  {pc:5.1f}%  {fn}" for fn, pc in prof.get("self", [])),
        "",
        "Top functions including callees (inclusive %):",
        *(f"  {pc:5.1f}%  {fn}" for fn, pc in prof.get("inclusive", [])),
    ]
    if "error" in prof:
        lines.append(f"py-spy failed: {prof['error']}")
    path.write_text("\n".join(lines) + "\n")


async def tts_section(ctx: dict[str, Any], tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    procs = Processes(tmp)
    config = tmp / "gateway.toml"
    config.write_text(gateway_toml(ctx["fake"].info["url"], ctx["db"]))
    port = procs.start_gateway(config)
    assert procs.gateway is not None
    pid = procs.gateway.pid
    try:
        box = Box([pid, ctx["fake"].pid])
        cpu0 = cpu_seconds(pid)
        out = await tts_burst.run_tts(
            "127.0.0.1",
            port,
            ctx["key"],
            ctx["fake"].info["url"],
            args.tts_sequential,
            args.tts_burst,
            args.tts_in_flight,
        )
        out["gateway_cpu_ms_per_request"] = round(
            (cpu_seconds(pid) - cpu0)
            * 1000
            / max(1, out["sequential"]["gateway"]["requests"] + out["burst"]["gateway"]["requests"]),
            3,
        )
        out.update(box.stop())
    finally:
        procs.stop()
    return out


def local_section(args: argparse.Namespace) -> dict[str, Any]:
    out_path = RESULTS / "local_asr.json"
    cmd = [
        sys.executable,
        str(HERE / "local_asr.py"),
        "--skip",
        "streams",
        "--alt-silence-ms",
        "0",
        "--runs",
        str(args.local_runs),
        "--latency-files",
        LOCAL_FILES,
        "--samples",
        str(args.samples),
        "--out",
        str(out_path),
    ]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout)[-2000:]}
    data = json.loads(out_path.read_text())
    lat = data["latency"][0]
    pooled = [x for f in lat["files"] for x in f["latency_s"]]
    after = lat["after_vad_end"]
    import numpy as np

    return {
        "wall_s": round(time.perf_counter() - t, 1),
        "rtf": data["rtf"]["overall"]["rtf"],
        "rtf_audio_s": data["rtf"]["overall"]["audio_s"],
        "files": [f["file"] for f in lat["files"]],
        "runs": lat["runs"],
        "latencies": len(pooled),
        "p50_ms": round(float(np.percentile(pooled, 50)) * 1000, 1) if pooled else None,
        "p99_ms": round(float(np.percentile(pooled, 99)) * 1000, 1) if pooled else None,
        "after_vad_p50_ms": round(after["p50"] * 1000, 1) if after.get("p50") is not None else None,
        "silence_ms": data["settings"]["vad"]["silence_ms"],
        "problems": lat["problems"],
        "other_cores": (lat.get("cpu") or {}).get("other_cores"),
    }


# ------------------------------------------------------------------ report


def f(x: Any, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def yes(ok: bool) -> str:
    return "yes" if ok else "no"


def ratio(a: Any, b: Any) -> str:
    return "-" if not a or not b else f"{a / b:.1f}x"


def tables(res: dict[str, Any]) -> str:
    lines = [
        "| N | sustained gw / echo | gw cores | gw CPU ms per audio-s | gw CPU s per stream-min "
        "| echo CPU ms per audio-s | CPU gw/echo | added p50 / p99 ms gw | echo p50 / p99 ms | p99 gw/echo "
        "| end of speech -> reply p50 / p99 ms "
        "| MB per stream gw / echo | gen lag p99 ms | other CPU cores |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for lv in res["asr"]:
        g, e = lv.get("gateway") or {}, lv.get("echo") or {}
        ga, ea = g.get("added", {}), e.get("added", {})
        gcpu, ecpu = g.get("cpu_ms_per_audio_s"), e.get("cpu_ms_per_audio_s")
        gend = g.get("end_of_speech", {})
        lag = max([r["generator_lateness_ms"]["p99"] for r in (g, e) if r] or [None])  # type: ignore[type-var]
        other = max([r["other_cores"] for r in (g, e) if r] or [None])  # type: ignore[type-var]
        lines.append(
            f"| {lv['streams']} | {yes(g['sustained']) if g else '-'} / {yes(e['sustained']) if e else '-'} "
            f"| {f(g.get('cpu_cores'), 2)} | {f(gcpu, 2)} | {f(g.get('cpu_s_per_stream_min'), 3)} "
            f"| {f(ecpu, 2)} | {ratio(gcpu, ecpu)} "
            f"| {f(ga.get('p50_ms'))} / {f(ga.get('p99_ms'))} | {f(ea.get('p50_ms'))} / {f(ea.get('p99_ms'))} "
            f"| {ratio(ga.get('p99_ms'), ea.get('p99_ms'))} "
            f"| {f(gend.get('p50_ms'), 0)} / {f(gend.get('p99_ms'), 0)} "
            f"| {f(g.get('mb_per_stream'), 3)} / {f(e.get('mb_per_stream'), 3)} "
            f"| {f(lag)} | {f(other, 2)} |"
        )
    lines += ["", "| measure | target | measured | met |", "|---|---:|---:|---|"]
    t = TARGETS
    sus = [lv["gateway"] for lv in res["asr"] if lv.get("gateway", {}).get("sustained")]
    best = max(sus, key=lambda r: r["streams"]) if sus else None
    under = [r for r in sus if r["added"]["p99_ms"] is not None and r["added"]["p99_ms"] <= t["asr_p99_ms"]]
    best_p99 = max(under, key=lambda r: r["streams"]) if under else None
    tried = max((lv["streams"] for lv in res["asr"]), default=0)
    lines.append(
        f"| real-time streams sustained, p99 added <= {t['asr_p99_ms']:.0f} ms | {t['streams']} "
        f"| {best_p99['streams'] if best_p99 else 0} (largest level tried {tried}) "
        f"| {'yes' if best_p99 and best_p99['streams'] >= t['streams'] else 'no'} |"
    )
    if best:
        cpu = best["cpu_ms_per_audio_s"]
        lines.append(
            f"| gateway CPU per second of audio (at N={best['streams']}) | {t['cpu_ms_per_audio_s']:.1f} ms "
            f"| {f(cpu, 2)} ms | {'yes' if cpu is not None and cpu <= t['cpu_ms_per_audio_s'] else 'no'} |"
        )
    tts = res.get("tts")
    if tts and "sequential" in tts:
        a50, a99 = tts["added_p50_ms"], tts["added_p99_ms"]
        burst = tts["burst"]
        lines.append(
            f"| TTS added latency p50 / p99 (1 in flight; gateway {f(burst['gateway']['rps'], 0)} req/s vs direct "
            f"{f(burst['direct']['rps'], 0)} req/s at {tts['in_flight']} in flight) "
            f"| {t['tts_p50_ms']:.0f} / {t['tts_p99_ms']:.0f} ms | {f(a50, 2)} / {f(a99, 2)} ms "
            f"| {yes(a50 is not None and a99 is not None and a50 <= t['tts_p50_ms'] and a99 <= t['tts_p99_ms'])} |"
        )
    loc = res.get("local")
    if loc and "p50_ms" in loc:
        ok = loc["p50_ms"] is not None and loc["p50_ms"] <= t["local_p50_ms"] and loc["p99_ms"] <= t["local_p99_ms"]
        lines.append(
            f"| local engine end of speech -> final p50 / p99 ({loc['latencies']} utterances <= 5 s, "
            f"silence window {loc['silence_ms']} ms included; RTF {loc['rtf']:.3f}) "
            f"| {t['local_p50_ms']:.0f} / {t['local_p99_ms']:.0f} ms "
            f"| {f(loc['p50_ms'], 0)} / {f(loc['p99_ms'], 0)} ms "
            f"| {'yes' if ok else 'no'} |"
        )
    elif loc:
        lines.append(f"| local engine | | failed: {loc.get('error', '?')[:200]} | no |")
    return "\n".join(lines)


# ------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke load: 3 streams, 4 s, short TTS, no profile, no local")
    p.add_argument("--levels", help="concurrent ASR streams (default 100,250,500,1000,2000; quick 3)")
    p.add_argument("--duration", type=float, help="seconds each stream sends (default 24; quick 5)")
    p.add_argument("--warmup", type=float, help="seconds before the measured window (default 4; quick 1)")
    p.add_argument("--gap", type=float, default=3.0, help="silence after each clip, seconds (default 3)")
    p.add_argument("--keep-going", action="store_true", help="run every level even after the gateway fails one")
    p.add_argument("--targets", default="gateway,echo", help="ASR load targets (default gateway,echo)")
    p.add_argument("--profile-s", type=float, help="py-spy seconds (default 15; 0: skip)")
    p.add_argument("--profile-level", type=int, help="streams for the profile run (default: the gateway's top level)")
    p.add_argument("--tts-sequential", type=int, help="sequential TTS requests per path (default 500; quick 20)")
    p.add_argument("--tts-burst", type=int, help="burst TTS requests per path (default 1000; quick 40)")
    p.add_argument("--tts-in-flight", type=int, default=16, help="requests in flight during the burst (default 16)")
    p.add_argument("--local-runs", type=int, help="local_asr.py latency runs (default 4; quick 1)")
    p.add_argument("--skip", default="", help="comma list of sections to skip: asr,profile,tts,local")
    p.add_argument(
        "--ledger-dir",
        type=Path,
        help="folder of the gateway's SQLite ledger (default: a temp dir; /dev/shm: no fsync)",
    )
    p.add_argument("--samples", type=Path, default=SAMPLES, help=f"recordings (default {SAMPLES})")
    p.add_argument("--out", type=Path, default=RESULTS / "suite.json", help="JSON results")
    a = p.parse_args(argv)
    q = a.quick
    a.levels = [int(x) for x in (a.levels or ("3" if q else "100,250,500,1000,2000")).split(",") if x.strip()]
    a.duration = a.duration if a.duration is not None else (5.0 if q else 24.0)
    a.warmup = a.warmup if a.warmup is not None else (1.0 if q else 4.0)
    a.profile_s = a.profile_s if a.profile_s is not None else (0.0 if q else 15.0)
    a.tts_sequential = a.tts_sequential or (20 if q else 500)
    a.tts_burst = a.tts_burst or (40 if q else 1000)
    a.local_runs = a.local_runs or (1 if q else 4)
    a.targets = [x.strip() for x in a.targets.split(",") if x.strip()]
    a.skip = {x.strip() for x in a.skip.split(",") if x.strip()} | ({"local"} if q else set())
    if a.duration <= a.warmup + 1:
        p.error("--duration must exceed --warmup by more than 1 s")
    return a


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    plan = load.build_plan(args.samples, load.DEFAULT_CLIPS, args.gap, args.duration)
    load.expect_gateway(plan)
    load.expect_echo(plan)
    db = str((args.ledger_dir or tmp) / f"bench-ledger-{os.getpid()}.db")
    ctx: dict[str, Any] = {"db": db, "key": await make_key(db), "warmup_s": args.warmup}
    utts = sum(len(s.expect["gateway"]) for s in plan.scripts) / len(plan.scripts)
    res: dict[str, Any] = {
        "plan": {
            "clips": plan.clips,
            "cycle_s": plan.cycle_s,
            "speech_s_per_cycle": plan.speech_s_per_cycle,
            "stream_s": plan.chunks * load.CHUNK_S,
            "gateway_utterances_per_stream": round(utts, 2),
            "scripts": len(plan.scripts),
        },
        "asr": [],
    }
    ctx["fake"] = fake = Child("bench.fake_upstream", tmp / "fake.log")
    try:
        if "asr" not in args.skip:
            # Each target escalates until its first level not sustained; the
            # echo relay goes on after the gateway stops, so every run shows
            # what the generator and a plain relay do at the top levels.
            active = [t for t in args.targets if t in ("gateway", "echo")]
            for n in args.levels:
                if not active:
                    break
                level: dict[str, Any] = {"streams": n}
                res["asr"].append(level)
                for target in list(active):
                    row = await asr_level(target, n, plan, ctx, tmp)
                    level[target] = row
                    log(progress(row))
                    if not row["sustained"] and not args.keep_going:
                        log(f"  {target} did not sustain N={n}; no higher level for it")
                        active.remove(target)
            # The profile runs where the gateway reached its limit: the highest
            # level it was run at (its first level not sustained, if any).
            tried = [lv["streams"] for lv in res["asr"] if "gateway" in lv]
            n_prof = args.profile_level or (max(tried) if tried else min(args.levels))
            if args.profile_s and "profile" not in args.skip and "gateway" in args.targets:
                dur = args.warmup + args.profile_s + 2
                prof_plan = load.build_plan(args.samples, load.DEFAULT_CLIPS, args.gap, dur)
                load.expect_gateway(prof_plan)
                log(f"... profile: gateway at N={n_prof} under py-spy for {args.profile_s:g} s")
                row = await asr_level("gateway", n_prof, prof_plan, ctx, tmp, profile_s=args.profile_s)
                res["profile"] = {k: row[k] for k in ("streams", "window_s", "cpu_ms_per_audio_s", "profile")}
                text = RESULTS / "profile_gateway.txt"
                write_profile_text(row, text)
                log(text.read_text())
        if "tts" not in args.skip:
            log("... TTS: gateway vs Riva adapter direct")
            res["tts"] = await tts_section(ctx, tmp, args)
    finally:
        fake.stop()
    if "local" not in args.skip:
        log("... local engine: bench/local_asr.py (RTF, end-of-speech latency)")
        res["local"] = local_section(args)
    return res


def progress(row: dict[str, Any]) -> str:
    a = row["added"]
    failed = [k for k, v in row["checks"].items() if not v]
    return (
        f"  {row['target']:<7} N={row['streams']:<5} {'sustained' if not failed else f'NOT sustained {failed}'}"
        f"  CPU {f(row['cpu_ms_per_audio_s'], 2)} ms/audio-s ({f(row['cpu_cores'], 2)} cores)"
        f"  added p50 {f(a['p50_ms'])} p99 {f(a['p99_ms'])} ms (n={a['n']})"
        f"  RSS +{f(row['mb_per_stream'], 3)} MB/stream  gen lag p99 {row['generator_lateness_ms']['p99']} ms"
        f"  fake {row['fake_cores']} cores, generator {row['generator_cores']}, other {row['other_cores']}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_fd_limit()
    RESULTS.mkdir(parents=True, exist_ok=True)
    info = machine()
    info["mem_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    started = time.perf_counter()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    log(
        f"# bench suite {when}: {info['nproc']} CPUs ({info['cpu_model']}), {info['mem_gb']} GB, "
        f"Python {info['python']}"
    )
    log(f"# ASR levels {args.levels}, {args.duration:g} s per stream, window after {args.warmup:g} s")
    with tempfile.TemporaryDirectory(prefix="bench-suite-") as name:
        try:
            res = asyncio.run(run(args, Path(name)))
        finally:
            if args.ledger_dir is not None:
                for leftover in args.ledger_dir.glob(f"bench-ledger-{os.getpid()}.db*"):
                    leftover.unlink()
    res.update({"machine": info, "date": when, "elapsed_s": round(time.perf_counter() - started, 1)})
    res["settings"] = {
        k: (sorted(v) if isinstance(v, set) else str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
    }
    table = tables(res)
    res["table"] = table
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1, default=str) + "\n")
    log(
        f"\n## {when}: {info['nproc']} x {info['cpu_model']}, {info['mem_gb']} GB, Python {info['python']}; "
        f"suite took {res['elapsed_s']:.0f} s\n"
    )
    log(table)
    log(f"\nwrote {args.out}")
    return 0
