"""Run the benchmark suite: `make bench` (full) or `make bench-smoke` (a few seconds, CI).

Installs what is missing (wrk and nginx from Debian, the gateway's runtime requirements into
bench/.venv-gateway, LiteLLM into bench/.venv-litellm, Portkey into bench/node_modules, patched),
starts the mock upstream and each target in turn on loopback ports, runs the scenarios of scenarios.py
against each, stops everything (also on Ctrl-C or failure) and writes bench/results/latest.md (smoke:
bench/results/smoke.md) and a .json beside it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import patch_portkey
import report
import scenarios
import targets
from targets import BENCH_DIR, LITELLM_VENV, PORTKEY_BUNDLE, REPO_DIR, Target

GATEWAY_VENV = BENCH_DIR / ".venv-gateway"

RESULTS_DIR = BENCH_DIR / "results"
RUN_DIR = BENCH_DIR / ".run"
ALL_TARGETS = ["direct", "nginx", "gateway", "litellm", "portkey"]
# Not in the default sweep: `make bench-floor` adds it (bench/flask_floor.py).
FLOOR_TARGET = "flask"
LABELS = {
    "direct": "direct",
    "nginx": "nginx",
    "flask": "bare Flask relay",
    "gateway": "Multi-LLM API",
    "litellm": "LiteLLM",
    "portkey": "Portkey",
}
LOAD_CORE = 1


def log(message: str) -> None:
    stamp = dt.datetime.now(dt.UTC).strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", flush=True)


def _run(argv: list[str], cwd: Path | None = None) -> None:
    log("$ " + " ".join(argv))
    subprocess.run(argv, cwd=cwd, check=True)


def ensure_debian(packages: dict[str, str]) -> None:
    """apt-get install the packages whose command is missing (command -> package)."""
    missing = [package for command, package in packages.items() if not shutil.which(command)]
    if not missing:
        return
    if os.geteuid() != 0:
        raise SystemExit(
            f"missing {', '.join(missing)}: install them (apt-get install -y {' '.join(missing)})"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", *missing]
    if subprocess.run(install, env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True)
        subprocess.run(install, env=env, check=True)


def ensure_litellm() -> None:
    """bench/.venv-litellm with the pinned litellm[proxy]."""
    wanted = (BENCH_DIR / "requirements-litellm.txt").read_text().split("==")[1].strip()
    python = LITELLM_VENV / "bin/python"
    if python.exists():
        probe = "import importlib.metadata as m; print(m.version('litellm'))"
        have = subprocess.run(
            [str(python), "-c", probe], capture_output=True, text=True, check=False
        ).stdout.strip()
        if have == wanted and (LITELLM_VENV / "bin/litellm").exists():
            return
    else:
        _run([sys.executable, "-m", "venv", str(LITELLM_VENV)])
    _run([str(python), "-m", "pip", "install", "-q", "-r", str(BENCH_DIR / "requirements-litellm.txt")])


def ensure_gateway_venv() -> str:
    """bench/.venv-gateway with requirements.txt only, as production installs the gateway: a development
    environment also holds the test tools, some of which the app's libraries load when they find them
    (PyJWT loads cryptography, ~9 MB of RSS per process)."""
    requirements = REPO_DIR / "requirements.txt"
    stamp = GATEWAY_VENV / ".requirements-sha256"
    wanted = hashlib.sha256(requirements.read_bytes()).hexdigest()
    python = GATEWAY_VENV / "bin/python"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return str(python)
    shutil.rmtree(GATEWAY_VENV, ignore_errors=True)
    _run([sys.executable, "-m", "venv", str(GATEWAY_VENV)])
    _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(requirements)])
    stamp.write_text(wanted)
    return str(python)


def ensure_portkey() -> None:
    """bench/node_modules from package-lock.json, then the streaming patch."""
    if not PORTKEY_BUNDLE.exists():
        if not shutil.which("npm"):
            raise SystemExit("npm is needed for the Portkey target (apt-get install -y nodejs npm)")
        _run(["npm", "ci", "--no-audit", "--no-fund"], cwd=BENCH_DIR)
    if patch_portkey.patch():
        log("patched Portkey for streaming on Node (its PR #1551)")


def machine_info() -> list[str]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = "?"
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory = f"{int(line.split()[1]) / 2**20:.0f} GiB"
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    wrk_version = (wrk.stdout or wrk.stderr).split("[")[0].strip() or "?"
    return [
        f"CPU: {cpu}, {os.cpu_count()} cores; memory {memory}",
        f"OS: {platform.system()} {platform.release()}; Python {platform.python_version()}",
        f"load: {wrk_version} (one thread), stream client: bench/stream_client.py (asyncio, raw sockets)",
        f"date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
    ]


def start_target(name: str, mock: Target, args: argparse.Namespace) -> Target:
    run_dir = RUN_DIR / name
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh database and config per start
    run_dir.mkdir(parents=True)
    if name == "direct":
        return mock
    if name == "nginx":
        return targets.start_nginx(run_dir, mock)
    if name == "gateway":
        return targets.start_gateway(run_dir, mock, args.app_python, args.workers, scenarios.MODELS)
    if name == FLOOR_TARGET:
        return targets.start_flask_floor(run_dir, mock, args.app_python, args.workers, scenarios.MODELS)
    if name == "litellm":
        return targets.start_litellm(run_dir, mock, scenarios.MODELS)
    if name == "portkey":
        return targets.start_portkey(run_dir, mock)
    raise SystemExit(f"unknown target {name}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="every scenario ~2 s, direct and gateway only")
    parser.add_argument(
        "--targets", default="", help=f"comma-separated, of {','.join([*ALL_TARGETS, FLOOR_TARGET])}"
    )
    parser.add_argument("--sweeps", type=int, default=0, help="how many times to run the whole sweep")
    parser.add_argument(
        "--app-python",
        default="",
        help="Python with the app's requirements (default: bench/.venv-gateway; --smoke: this one)",
    )
    parser.add_argument("--workers", type=int, default=int(os.environ.get("BENCH_GATEWAY_WORKERS", "1")))
    parser.add_argument("--output", default="", help="markdown path (default results/latest.md or smoke.md)")
    parser.add_argument("--no-install", action="store_true", help="do not install missing tools")
    args = parser.parse_args()
    args.targets = [t for t in args.targets.split(",") if t] or (
        ["direct", "gateway"] if args.smoke else list(ALL_TARGETS)
    )
    args.sweeps = args.sweeps or (1 if args.smoke else 2)
    args.app_python = args.app_python or os.environ.get("BENCH_APP_PYTHON") or ""
    default_out = RESULTS_DIR / ("smoke.md" if args.smoke else "latest.md")
    args.output = Path(args.output) if args.output else default_out
    return args


def main() -> int:
    args = parse_args()
    durations = (
        scenarios.Durations(warmup=1, a=2, b=2, c=3, d_rounds=1) if args.smoke else scenarios.Durations()
    )
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {LOAD_CORE})  # the mock and load generators inherit this core
    if not args.no_install:
        needed = {"wrk": "wrk"} | ({"nginx": "nginx"} if "nginx" in args.targets else {})
        ensure_debian(needed)
        if "litellm" in args.targets:
            ensure_litellm()
        if "portkey" in args.targets:
            ensure_portkey()
    elif "portkey" in args.targets:
        patch_portkey.patch()
    if not args.app_python:
        # The smoke checks that every scenario runs; figures come from the production install.
        no_venv = args.smoke or (args.no_install and not (GATEWAY_VENV / "bin/python").exists())
        args.app_python = sys.executable if no_venv else ensure_gateway_venv()

    # SIGTERM (and SIGINT, by default) unwind through the finally below, which stops every process.
    signal.signal(signal.SIGTERM, _interrupt)
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    RUN_DIR.mkdir(parents=True)
    sweeps: list[dict[str, dict]] = []
    versions: dict[str, str] = {}
    notes: dict[str, str] = {}
    failures: list[str] = []
    started = time.monotonic()
    try:
        mock = targets.start_mock(RUN_DIR)
        notes["direct"] = "the mock upstream itself (bench/mock_upstream.py); its RSS is the mock's"
        for sweep_index in range(args.sweeps):
            sweep: dict[str, dict] = {}
            for name in args.targets:
                log(f"sweep {sweep_index + 1}/{args.sweeps}: {LABELS[name]}")
                try:
                    target = start_target(name, mock, args)
                except Exception as exc:
                    failures.append(
                        f"sweep {sweep_index + 1}, {LABELS[name]}: did not start: {exc}".split("\n")[0]
                    )
                    log(f"  {name} did not start: {exc}")
                    continue
                versions[name] = target.version
                notes[name] = notes.get(name) or target.note
                try:
                    figures = scenarios.run_all(target, durations, log)
                    sweep[name] = figures
                    failures += [f"sweep {sweep_index + 1}, {LABELS[name]}: {e}" for e in figures["errors"]]
                    for error in figures["errors"]:
                        log(f"  ERROR {error}")
                except Exception as exc:
                    failures.append(f"sweep {sweep_index + 1}, {LABELS[name]}: {type(exc).__name__}: {exc}")
                    log(f"  {name} failed: {exc}\n{traceback.format_exc()}")
                finally:
                    if target is not mock:
                        target.stop()
                scenarios.wait_quiet()
            sweeps.append(sweep)
    except KeyboardInterrupt:
        log("interrupted: stopping everything")
        failures.append("interrupted")
    finally:
        for target in reversed(targets.RUNNING[:]):
            target.stop()

    settings = [
        f"scenario lengths: warm-up {durations.warmup:g} s, (a) {durations.a:g} s, (b) {durations.b:g} s, "
        f"(c) {durations.c:g} s, (d) {durations.d_rounds} round(s) of 64 streams; {args.sweeps} sweep(s); "
        f"total {time.monotonic() - started:.0f} s",
        f"mock profiles: (a)/(b) model '{scenarios.FAST_MODEL}', (c) '{scenarios.SLOW_MODEL}', "
        f"(d) '{scenarios.STREAM_MODEL}' (see bench/mock_upstream.py)",
        f"gateway python: {args.app_python}; repository {REPO_DIR.name}",
    ]
    if sweeps:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        page = report.render(sweeps, LABELS, versions, notes, machine_info(), settings, failures)
        args.output.write_text(page)
        args.output.with_suffix(".json").write_text(
            json.dumps({"sweeps": sweeps, "versions": versions, "failures": failures}, indent=1, default=str)
        )
        log(f"wrote {args.output}")
        print(page)
    if failures:
        log(f"{len(failures)} error(s):\n  " + "\n  ".join(failures))
    ran_everything = (
        all(name in sweep for sweep in sweeps for name in args.targets) and len(sweeps) == args.sweeps
    )
    if args.smoke:
        return 0 if (not failures and ran_everything) else 1
    # The comparison targets may legitimately time out under load; our own rows must be complete.
    ours_ok = all(name in sweep for sweep in sweeps for name in ("direct", "gateway") if name in args.targets)
    return 0 if (ours_ok and len(sweeps) == args.sweeps) else 1


if __name__ == "__main__":
    sys.exit(main())
