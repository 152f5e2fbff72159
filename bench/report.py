"""Turn the sweeps' figures into bench/results/*.md: one side-by-side table plus each sweep's."""

from __future__ import annotations

import math
import statistics

ORDER = ["direct", "nginx", "flask", "gateway", "litellm", "portkey"]
OURS = "gateway"

# key, label, better ("lower"/"higher"), how sweeps combine, format
ROWS = [
    ("a_added_p50_ms", "(a) latency added over direct, p50 (ms)", "lower", "mean", "{:.2f}"),
    ("a_added_p99_ms", "(a) latency added over direct, p99 (ms)", "lower", "mean", "{:.2f}"),
    ("a_p50_ms", "(a) latency, 1 connection, p50 (ms)", "lower", "mean", "{:.2f}"),
    ("a_p99_ms", "(a) latency, 1 connection, p99 (ms)", "lower", "mean", "{:.2f}"),
    ("b_rps", "(b) 64 connections: requests/s", "higher", "mean", "{:,.0f}"),
    ("b_p99_ms", "(b) 64 connections: p99 (ms)", "lower", "mean", "{:.1f}"),
    ("b_failed", "(b) requests failed or over 10 s (left out of p99)", "lower", "max", "{:,.0f}"),
    ("c_rps", "(c) 500 ms upstream, 256 connections: requests/s (512 ideal)", "higher", "mean", "{:,.0f}"),
    ("c_pct_of_direct", "(c) requests/s as % of direct", "higher", "mean", "{:.1f} %"),
    ("c_p99_ms", "(c) 500 ms upstream, 256 connections: p99 (ms)", "lower", "mean", "{:,.0f}"),
    ("c_failed", "(c) requests failed or over 10 s (left out of p99)", "lower", "max", "{:,.0f}"),
    ("d_added_p50_ms", "(d) 64 streams: first token added over direct, p50 (ms)", "lower", "mean", "{:.1f}"),
    ("d_added_p99_ms", "(d) 64 streams: first token added over direct, p99 (ms)", "lower", "mean", "{:.1f}"),
    ("d_ttft_p50_ms", "(d) 64 streams: time to first token, p50 (ms)", "lower", "mean", "{:.1f}"),
    ("d_ttft_p99_ms", "(d) 64 streams: time to first token, p99 (ms)", "lower", "mean", "{:.1f}"),
    ("d_complete_pct", "(d) streams with every chunk delivered (%)", "higher", "min", "{:.1f} %"),
    ("e_rss_mb", "(e) peak RSS during (c), all processes (MB)", "lower", "max", "{:,.0f}"),
    ("f_rss_mb", "(f) peak RSS with 256 concurrent streams, all processes (MB)", "lower", "max", "{:,.0f}"),
    ("f_complete_pct", "(f) 256 streams with every chunk delivered (%)", "higher", "min", "{:.1f} %"),
]


def derive(sweep: dict[str, dict]) -> None:
    """Add the figures relative to direct, measured in the same sweep."""
    direct = sweep.get("direct") or {}
    for figures in sweep.values():
        if "a_p50_ms" in figures and "a_p50_ms" in direct:
            figures["a_added_p50_ms"] = figures["a_p50_ms"] - direct["a_p50_ms"]
            figures["a_added_p99_ms"] = figures["a_p99_ms"] - direct["a_p99_ms"]
        if "c_rps" in figures and direct.get("c_rps"):
            figures["c_pct_of_direct"] = 100 * figures["c_rps"] / direct["c_rps"]
        if "d_ttft_p50_ms" in figures and "d_ttft_p50_ms" in direct:
            figures["d_added_p50_ms"] = figures["d_ttft_p50_ms"] - direct["d_ttft_p50_ms"]
            figures["d_added_p99_ms"] = figures["d_ttft_p99_ms"] - direct["d_ttft_p99_ms"]
        if figures.get("d_streams"):
            figures["d_complete_pct"] = 100 * figures["d_complete"] / figures["d_streams"]
        if figures.get("f_streams"):
            figures["f_complete_pct"] = 100 * figures["f_complete"] / figures["f_streams"]


def combine(sweeps: list[dict[str, dict]]) -> dict[str, dict]:
    """One figure per target and row across sweeps (mean, min or max, as the row says)."""
    out: dict[str, dict] = {}
    for name in ORDER:
        for key, _label, _better, how, _fmt in ROWS:
            values = [s[name][key] for s in sweeps if name in s and key in s[name]]
            if values:
                pick = {"mean": statistics.fmean, "min": min, "max": max}[how]
                out.setdefault(name, {})[key] = pick(values)
    return out


def _cell(fmt: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return fmt.format(value)


def _ratio(ours: float | None, other: float | None) -> str:
    if ours is None or other is None or other == 0:
        return "—"
    return f"{ours / other:.2f}x"


def table(figures: dict[str, dict], names: list[str], labels: dict[str, str]) -> list[str]:
    """Markdown rows: one per figure, one column per target, then ours ÷ LiteLLM and ÷ Portkey."""
    head = ["figure", "better"] + [labels[n] for n in names]
    compare = [other for other in ("litellm", "portkey") if other in names and OURS in names]
    head += [f"{labels[OURS]} ÷ {labels[o]}" for o in compare]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label, better, _how, fmt in ROWS:
        row = [label, better] + [_cell(fmt, figures.get(n, {}).get(key)) for n in names]
        row += [_ratio(figures.get(OURS, {}).get(key), figures.get(o, {}).get(key)) for o in compare]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def render(
    sweeps: list[dict[str, dict]],
    labels: dict[str, str],
    versions: dict[str, str],
    notes: dict[str, str],
    machine: list[str],
    settings: list[str],
    failures: list[str],
) -> str:
    """The whole results page."""
    for sweep in sweeps:
        derive(sweep)
    names = [n for n in ORDER if any(n in s for s in sweeps)]
    lines = ["# Benchmark results", ""]
    lines += [
        "Produced by `make bench` (bench/run.py). Each gateway pinned to core 0 with taskset; the mock "
        "upstream and the load generators (wrk, bench/stream_client.py) on core 1, so figures are per core. "
        f"Combined over {len(sweeps)} sweep(s): mean, except peak RSS (max) and complete streams (min). "
        "Ratios are this project's figure divided by the other's: below 1 is better where lower is better.",
        "",
    ]
    lines += table(combine(sweeps), names, labels)
    lines += [
        "",
        "Reading it: nginx is the floor any proxy pays here, core crossing included (see its p99 in (a)). "
        "wrk leaves requests slower than its 10 s timeout out of its percentiles; the 'failed or over 10 s' "
        "rows count them, so a p99 next to a non-zero count there is optimistic. In (c), direct shows how much "
        "of the ideal 512/s a 20 s window leaves (the last in-flight round is not counted).",
    ]
    if "flask" in names:
        lines[-1] += (
            " The bare Flask relay (bench/flask_floor.py, `make bench-floor`) shows what this server, Flask and "
            "an ordinary urllib3 relay cost before any of the gateway's work."
        )
    lines += ["", "## Targets and versions", ""]
    for name in names:
        extra = f"; {notes[name]}" if notes.get(name) else ""
        lines.append(f"- {labels[name]}: {versions.get(name, '?')}{extra}")
    lines += ["", "## Machine and settings", ""] + [f"- {m}" for m in machine + settings]
    if failures:
        lines += ["", "## Errors seen", ""] + [f"- {f}" for f in failures]
    for index, sweep in enumerate(sweeps, 1):
        lines += ["", f"## Sweep {index}", "", *table(sweep, [n for n in names if n in sweep], labels)]
    return "\n".join(lines) + "\n"
