"""The processes under test: the mock upstream and each target in front of it, on loopback ports.

Every target is started in its own process group (so stop() ends all of its processes) and, for
gateways, under `taskset -c 0`; the caller pins itself (and so the mock and load generators it
spawns) to the other core. A Target says how a client reaches it: URL, headers and model name.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
LITELLM_VENV = BENCH_DIR / ".venv-litellm"
PORTKEY_BUNDLE = BENCH_DIR / "node_modules/@portkey-ai/gateway/build/start-server.js"
MOCK_API_KEY = "sk-bench-mock"
GATEWAY_CORE = "0"
PR_SET_PDEATHSIG = 1
# Every target with a process started, until stop(): the runner stops whatever is left here on exit,
# including a target that failed half-way through starting.
RUNNING: list[Target] = []


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the runner dies, even by SIGKILL (Linux prctl)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_json(
    method: str,
    url: str,
    body: dict | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> tuple[int, dict]:
    """One loopback JSON request; returns status and parsed body (empty dict if not JSON)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw or b"{}")
    except ValueError:
        return status, {"raw": raw[:500].decode("latin-1")}


@dataclass
class Target:
    """A running server a client can load: how to reach it and how to stop it."""

    name: str
    label: str
    base_url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    model_prefix: str = ""
    version: str = ""
    note: str = ""
    processes: list[subprocess.Popen] = field(default_factory=list)
    log_paths: list[Path] = field(default_factory=list)

    @property
    def chat_url(self) -> str:
        return self.base_url + "/chat/completions"

    def model(self, name: str) -> str:
        return self.model_prefix + name

    def root_pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.poll() is None]

    def spawn(
        self, argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        """Start one process of this target in a new session, output to `log`."""
        log.parent.mkdir(parents=True, exist_ok=True)
        handle = log.open("ab")
        self.processes.append(
            subprocess.Popen(
                argv,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # no orphans if the runner is killed outright
            )
        )
        handle.close()
        self.log_paths.append(log)
        if self not in RUNNING:
            RUNNING.append(self)

    def wait_ready(self, model: str, timeout_s: float = 90.0) -> None:
        """Poll with a real chat completion until it answers 200, or fail with the log tail."""
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            for proc in self.processes:
                if proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {proc.returncode}\n{self.log_tail()}")
            try:
                status, body = http_json(
                    "POST",
                    self.chat_url,
                    {"model": self.model(model), "messages": [{"role": "user", "content": "ping"}]},
                    self.headers,
                    timeout=5,
                )
                if status == 200 and body.get("choices"):
                    return
                last = f"{status} {str(body)[:300]}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} not ready after {timeout_s:.0f}s: {last}\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        out = []
        for path in self.log_paths:
            if path.exists():
                out.append(f"--- {path}")
                out += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(out)

    def stop(self) -> None:
        """SIGTERM each process group, then SIGKILL what is left after 10 s."""
        for proc in self.processes:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.processes:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.processes.clear()
        if self in RUNNING:
            RUNNING.remove(self)


def pinned(argv: list[str]) -> list[str]:
    """Prefix a command with taskset to the gateway core, where the machine has two cores."""
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", GATEWAY_CORE, *argv]
    return argv


def start_mock(run_dir: Path) -> Target:
    """The upstream every target forwards to; its own target is `direct`."""
    port = free_port()
    target = Target("direct", "direct to mock (the limit)", base_url=f"http://127.0.0.1:{port}/v1")
    target.spawn(
        [sys.executable, str(BENCH_DIR / "mock_upstream.py"), "--port", str(port)], run_dir / "mock.log"
    )
    target.headers = {"Authorization": f"Bearer {MOCK_API_KEY}"}
    target.version = f"Python {sys.version.split()[0]} asyncio"
    target.wait_ready("mock", timeout_s=15)
    return target


def start_nginx(run_dir: Path, upstream: Target) -> Target:
    """nginx proxy_pass with upstream keepalive: the floor any proxy pays."""
    port = free_port()
    prefix = run_dir / "nginx"
    prefix.mkdir(parents=True, exist_ok=True)
    upstream_port = upstream.base_url.split(":")[2].split("/")[0]
    conf = f"""daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream mock {{ server 127.0.0.1:{upstream_port}; keepalive 512; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 120s;
        }}
    }}
}}
"""
    (prefix / "nginx.conf").write_text(conf)
    target = Target("nginx", "nginx proxy_pass (the floor)", base_url=f"http://127.0.0.1:{port}/v1")
    target.headers = dict(upstream.headers)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    target.spawn(
        pinned([nginx, "-p", f"{prefix}/", "-c", f"{prefix}/nginx.conf", "-e", f"{prefix}/error.log"]),
        run_dir / "nginx.log",
    )
    version = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False)
    target.version = (version.stderr or version.stdout).strip().split("/")[-1]
    target.wait_ready("mock", timeout_s=15)
    return target


def gateway_settings(database: Path, upstream: Target) -> dict[str, str]:
    """The gateway's settings under test (also bench/call_cost.py's): production, SQLite, limits on."""
    return {
        "APP_ENV": "production",
        "FLASK_ENV": "production",
        "SECRET_KEY": secrets.token_hex(32),
        "JWT_SECRET_KEY": secrets.token_hex(32),
        "JWT_ACCESS_TOKEN_EXPIRES": "12h",
        "DATABASE_URL": f"sqlite:///{database}",
        "RATE_LIMIT_ENABLED": "true",
        "RATE_LIMIT_PER_MINUTE": "100000000",
        "OPENAI_API_KEY": MOCK_API_KEY,
        "OPENAI_BASE_URL": upstream.base_url,
    }


def start_gateway(run_dir: Path, upstream: Target, python: str, workers: int, models: list[str]) -> Target:
    """Our gateway: production config (gunicorn.conf.py), one user with an API key."""
    port = free_port()
    data_dir = run_dir / "gateway"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    env = {
        **os.environ,
        **gateway_settings(data_dir / "bench.db", upstream),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "GUNICORN_WORKERS": str(workers),
    }
    migrate = subprocess.run(
        [python, "-m", "flask", "--app", "wsgi", "db", "upgrade"],
        cwd=REPO_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if migrate.returncode != 0:
        raise RuntimeError(f"gateway: db upgrade failed\n{migrate.stdout}\n{migrate.stderr}")
    target = Target("gateway", "Multi-LLM API (this project)", base_url=f"http://127.0.0.1:{port}/v1")
    target.model_prefix = "openai/"
    target.spawn(
        pinned([python, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]),
        run_dir / "gateway.log",
        env=env,
        cwd=REPO_DIR,
    )
    target.version = _gateway_version(python)
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 60
    while True:
        try:
            status, _ = http_json("GET", f"{api}/health", timeout=2)
            if status < 500:
                break
        except OSError:
            pass
        if time.monotonic() > deadline or any(p.poll() is not None for p in target.processes):
            raise RuntimeError(f"gateway did not start\n{target.log_tail()}")
        time.sleep(0.3)
    credential, kind = _gateway_credential(api)
    target.headers = {"Authorization": f"Bearer {credential}"}
    target.note = f"{_served_as(env, workers)}; rate limits on; calls authenticated by {kind}"
    target.wait_ready(models[0], timeout_s=30)
    return target


def start_flask_floor(
    run_dir: Path, upstream: Target, python: str, workers: int, models: list[str]
) -> Target:
    """A bare Flask relay (bench/flask_floor.py) served as the gateway is: what server, framework and HTTP
    client cost before any of the gateway's own work."""
    port = free_port()
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "GUNICORN_WORKERS": str(workers),
        "FLOOR_UPSTREAM": upstream.base_url,
        "FLOOR_API_KEY": MOCK_API_KEY,
    }
    target = Target("flask", "bare Flask relay", base_url=f"http://127.0.0.1:{port}/v1")
    target.spawn(
        pinned(
            [python, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--pythonpath", "bench", "flask_floor:app"]
        ),
        run_dir / "flask.log",
        env=env,
        cwd=REPO_DIR,
    )
    probe = "import flask, urllib3; print(f'Flask {flask.__version__}, urllib3 {urllib3.__version__}')"
    found = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=False)
    target.version = found.stdout.strip() or "?"
    target.note = f"bench/flask_floor.py; {_served_as(env, workers)}; nothing else"
    target.wait_ready(models[0], timeout_s=30)
    return target


def _served_as(env: dict[str, str], workers: int) -> str:
    """How gunicorn.conf.py serves an app under `env`, for the results page."""
    worker_class = env.get("GUNICORN_WORKER_CLASS") or "gevent_worker.Worker (gevent)"
    return f"gunicorn.conf.py, {workers} worker(s), {worker_class}"


def _gateway_credential(api: str) -> tuple[str, str]:
    """Register a bench user; its API key, or its JWT where /api/keys does not exist, and which."""
    user = {
        "username": "benchuser",
        "email": "bench@example.com",
        "password": secrets.token_urlsafe(18) + "aA1!",
    }
    status, body = http_json("POST", f"{api}/auth/register", user)
    if status not in (200, 201):
        raise RuntimeError(f"gateway: register answered {status}: {body}")
    status, body = http_json(
        "POST", f"{api}/auth/login", {"username": user["username"], "password": user["password"]}
    )
    token = body.get("access_token") or (body.get("data") or {}).get("access_token")
    if status != 200 or not token:
        raise RuntimeError(f"gateway: login answered {status}: {body}")
    status, body = http_json("POST", f"{api}/keys", {"name": "bench"}, {"Authorization": f"Bearer {token}"})
    if status == 404:
        return token, "a JWT access token (no /api/keys)"
    key = body.get("key") or (body.get("data") or {}).get("key")
    if status not in (200, 201) or not key:
        raise RuntimeError(f"gateway: POST /api/keys answered {status}: {body}")
    return key, "an API key"


def _gateway_version(python: str) -> str:
    probe = "import app.version as v; print(getattr(v, '__version__', getattr(v, 'VERSION', '?')))"
    out = subprocess.run([python, "-c", probe], cwd=REPO_DIR, capture_output=True, text=True, check=False)
    commit = subprocess.run(
        ["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return f"{out.stdout.strip() or '?'} ({commit.stdout.strip() or 'no git'})"


def start_litellm(run_dir: Path, upstream: Target, models: list[str]) -> Target:
    """LiteLLM proxy from bench/.venv-litellm, one explicit model entry per mock profile, no database."""
    port = free_port()
    master_key = "sk-bench-" + secrets.token_hex(16)
    lines = ["model_list:"]
    for model in models:
        lines += [
            f"  - model_name: {model}",
            "    litellm_params:",
            f"      model: openai/{model}",
            f"      api_base: {upstream.base_url}",
            f"      api_key: {MOCK_API_KEY}",
        ]
    lines += ["general_settings:", f"  master_key: {master_key}"]
    config = run_dir / "litellm.yaml"
    config.write_text("\n".join(lines) + "\n")
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    env.update(
        {
            "LITELLM_MASTER_KEY": master_key,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_TELEMETRY": "False",
            "LITELLM_LOG": "ERROR",
        }
    )
    target = Target("litellm", "LiteLLM proxy", base_url=f"http://127.0.0.1:{port}/v1")
    target.headers = {"Authorization": f"Bearer {master_key}"}
    target.spawn(
        pinned(
            [
                str(LITELLM_VENV / "bin/litellm"),
                "--config",
                str(config),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--num_workers",
                "1",
            ]
        ),
        run_dir / "litellm.log",
        env=env,
        # LiteLLM loads a .env from its working directory; the repository's is the gateway's, not its own.
        cwd=run_dir,
    )
    version = subprocess.run(
        [
            str(LITELLM_VENV / "bin/python"),
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'))",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    target.version = version.stdout.strip()
    target.note = "1 uvicorn worker, no database"
    target.wait_ready(models[0], timeout_s=180)
    return target


def start_portkey(run_dir: Path, upstream: Target) -> Target:
    """Portkey gateway on Node, headless, provider and custom host given per request in headers."""
    port = free_port()
    target = Target("portkey", "Portkey gateway", base_url=f"http://127.0.0.1:{port}/v1")
    target.headers = {
        "Authorization": f"Bearer {MOCK_API_KEY}",
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": upstream.base_url,
    }
    env = dict(os.environ, NODE_ENV="production")
    target.spawn(
        pinned(["node", str(PORTKEY_BUNDLE), f"--port={port}", "--headless"]),
        run_dir / "portkey.log",
        env=env,
        cwd=BENCH_DIR,
    )
    package = json.loads((PORTKEY_BUNDLE.parent.parent / "package.json").read_text())
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
    target.version = f"{package['version']} on Node {node.stdout.strip()}"
    target.note = "patched as in its PR #1551 (bench/patch_portkey.py)"
    target.wait_ready("mock", timeout_s=30)
    return target
