"""The five scenarios, the same for every target: wrk for plain requests, stream_client for streams.

(a) one connection, upstream answers at once: latency p50/p99
(b) 64 connections: requests/s and p99
(c) upstream answers after 500 ms, 256 connections: requests/s and p99, while (e) samples the
    target's resident memory (all processes of its tree)
(d) 64 concurrent streams of 50 chunks 20 ms apart: time to first token, every chunk delivered
(f) 256 concurrent streams of the same: peak RSS of the target, every chunk delivered
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from mock_upstream import expected_stream_text
from stream_client import run_streams
from targets import BENCH_DIR, Target

WRK_SCRIPT = BENCH_DIR / "wrk_post.lua"
FAST_MODEL = "mock"
SLOW_MODEL = "mock-d500"
STREAM_CHUNKS = 50
STREAM_MODEL = f"mock-c{STREAM_CHUNKS}-i20"
MODELS = [FAST_MODEL, SLOW_MODEL, STREAM_MODEL]


@dataclass
class Durations:
    """Seconds per scenario, and stream rounds for (d)."""

    warmup: float = 3
    a: float = 10
    b: float = 20
    c: float = 20
    d_rounds: int = 3


class ScenarioError(Exception):
    """A scenario could not run or saw errors."""


def run_wrk(target: Target, model: str, connections: int, seconds: float, timeout_s: float = 10) -> dict:
    """One wrk run against the target's chat endpoint; the JSON summary from wrk_post.lua."""
    env = dict(os.environ)
    env["BENCH_MODEL"] = target.model(model)
    env["BENCH_AUTH"] = target.headers.get("Authorization", "")
    env["BENCH_EXTRA_HEADERS"] = "\n".join(
        f"{k}: {v}" for k, v in target.headers.items() if k != "Authorization"
    )
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", f"--timeout={timeout_s:g}s"]
    argv += ["-s", str(WRK_SCRIPT), target.chat_url]
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=seconds + timeout_s + 60, check=False
    )
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            stats = json.loads(line[len("BENCH_JSON ") :])
            stats["rps"] = stats["requests"] / (stats["duration_us"] / 1e6)
            stats["errors"] = sum(
                stats[k]
                for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
            )
            return stats
    raise ScenarioError(f"wrk gave no summary (exit {done.returncode}): {done.stderr.strip()[:500]}")


def tree_rss_bytes(root_pids: list[int]) -> int:
    """Resident memory of the given processes and all their descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    total, stack, seen = 0, list(root_pids), set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        stack += children.get(pid, [])
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


class RssSampler:
    """Peak tree RSS of a target, sampled every 200 ms in a thread while active."""

    def __init__(self, root_pids: list[int]) -> None:
        self.root_pids = root_pids
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss_bytes(self.root_pids))
            self._stop.wait(0.2)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _ms(us: float) -> float:
    return us / 1000.0


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def run_all(target: Target, durations: Durations, log: callable) -> dict:
    """Warm up, then (a) to (e) against one target; figures plus a list of errors seen."""
    figures: dict = {"errors": []}
    run_wrk(target, FAST_MODEL, 16, durations.warmup)

    def check(name: str, stats: dict) -> None:
        # wrk leaves requests slower than its timeout out of the latency percentiles: count them apart.
        figures[f"{name}_failed"] = stats["errors"]
        if stats["requests"] == 0 or stats["errors"]:
            figures["errors"].append(
                f"({name}) {stats['errors']} errors of {stats['requests']} requests: "
                + ", ".join(
                    f"{k}={stats[k]}" for k in ("connect_errors", "read_errors", "status_errors", "timeouts")
                )
            )

    stats = run_wrk(target, FAST_MODEL, 1, durations.a)
    check("a", stats)
    figures.update(a_p50_ms=_ms(stats["p50_us"]), a_p99_ms=_ms(stats["p99_us"]), a_requests=stats["requests"])
    log(f"  (a) p50 {figures['a_p50_ms']:.3f} ms  p99 {figures['a_p99_ms']:.3f} ms")

    stats = run_wrk(target, FAST_MODEL, 64, durations.b)
    check("b", stats)
    figures.update(b_rps=stats["rps"], b_p99_ms=_ms(stats["p99_us"]))
    log(f"  (b) {figures['b_rps']:.0f} req/s  p99 {figures['b_p99_ms']:.1f} ms")

    with RssSampler(target.root_pids()) as sampler:
        stats = run_wrk(target, SLOW_MODEL, 256, durations.c, timeout_s=10)
    check("c", stats)
    figures.update(c_rps=stats["rps"], c_p99_ms=_ms(stats["p99_us"]), e_rss_mb=sampler.peak / 2**20)
    log(
        f"  (c) {figures['c_rps']:.0f} req/s  p99 {figures['c_p99_ms']:.0f} ms   (e) peak RSS {figures['e_rss_mb']:.0f} MB"
    )

    outcome = asyncio.run(
        run_streams(target.chat_url, target.headers, target.model(STREAM_MODEL), 64, durations.d_rounds)
    )
    expected = expected_stream_text(STREAM_CHUNKS)
    ttfts = [r.ttft_s * 1000 for r in outcome.results if r.ttft_s is not None]
    complete = outcome.complete(expected)
    figures.update(d_streams=len(outcome.results), d_complete=complete)
    if ttfts:
        figures.update(d_ttft_p50_ms=statistics.median(ttfts), d_ttft_p99_ms=_percentile(ttfts, 99))
    if complete != len(outcome.results):
        failed = [r for r in outcome.results if not (r.status == 200 and r.done and r.text == expected)]
        sample = failed[0]
        figures["errors"].append(
            f"(d) {len(failed)} of {len(outcome.results)} streams incomplete; e.g. status {sample.status}, "
            f"{sample.content_events} content chunks, done={sample.done}, error={sample.error!r}"
        )
    log(
        f"  (d) TTFT p50 {figures.get('d_ttft_p50_ms', float('nan')):.1f} ms  "
        f"p99 {figures.get('d_ttft_p99_ms', float('nan')):.1f} ms  complete {complete}/{len(outcome.results)}"
    )

    # (f) memory held by 256 streams open at once (each lasts 50 chunks x 20 ms = 1 s).
    with RssSampler(target.root_pids()) as sampler:
        outcome = asyncio.run(
            run_streams(target.chat_url, target.headers, target.model(STREAM_MODEL), 256, 1)
        )
    complete = outcome.complete(expected)
    figures.update(f_rss_mb=sampler.peak / 2**20, f_streams=len(outcome.results), f_complete=complete)
    if complete != len(outcome.results):
        figures["errors"].append(
            f"(f) {len(outcome.results) - complete} of {len(outcome.results)} streams incomplete"
        )
    log(
        f"  (f) 256 streams: peak RSS {figures['f_rss_mb']:.0f} MB  complete {complete}/{len(outcome.results)}"
    )
    return figures


def wait_quiet(seconds: float = 1.0) -> None:
    """Let closing sockets and the upstream settle between targets."""
    time.sleep(seconds)
