"""Run N gateway instances behind nginx on one port, sharing PostgreSQL and Redis: `make cluster`.

Each instance is the production server (gunicorn -c gunicorn.conf.py wsgi:app) on its own loopback port;
nginx balances across them and streams without buffering. On N hosts, run one instance per host with the
same DATABASE_URL, REDIS_URL, RATE_LIMIT_STORAGE_URL, SECRET_KEY and JWT_SECRET_KEY, and point the load
balancer at them. Ctrl-C (or SIGTERM) drains and stops everything.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/api/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not become healthy within {timeout:g} s")


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database named in `url` if it does not exist yet."""
    if not url.startswith(("postgres://", "postgresql://", "postgresql+psycopg://")):
        return
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    admin = parsed.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (parsed.database,)
        ).fetchone()
        if not exists:
            connection.execute(f'CREATE DATABASE "{parsed.database}"')


def migrate(env: Mapping[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"],
        cwd=ROOT,
        env=dict(env),
        check=True,
        capture_output=True,
    )


def start_instance(port: int, env: Mapping[str, str], log: Path | None = None) -> subprocess.Popen:
    """One production server on 127.0.0.1:port, in its own process group so it can be killed whole."""
    output = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115  (the child keeps it)
    return subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
        cwd=ROOT,
        # Idle connections outlive nginx's (keepalive_timeout below), so nginx never reuses one being closed.
        env={"GUNICORN_KEEPALIVE": "75", **env, "HOST": "127.0.0.1", "PORT": str(port)},
        stdout=output,
        stderr=output,
        start_new_session=True,
    )


def nginx_conf(prefix: Path, port: int, backends: list[int]) -> str:
    servers = "\n".join(
        f"        server 127.0.0.1:{backend} max_fails=1 fail_timeout=2s;" for backend in backends
    )
    return f"""daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    client_max_body_size 2m;
    upstream gateway {{
{servers}
        keepalive 256;
        # Shorter than the instances' GUNICORN_KEEPALIVE (start_instance): nginx drops an idle connection
        # before gunicorn does. The other way round, a POST sent as gunicorn closes it fails with a 502
        # and, with max_fails=1, takes that instance out for fail_timeout.
        keepalive_timeout 60s;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://gateway;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            # Server-sent events pass through as they are produced.
            proxy_buffering off;
            proxy_read_timeout 3600s;
            # A dead instance's requests go to the next one when nothing was sent yet.
            proxy_next_upstream error timeout http_502 http_503;
        }}
    }}
}}
"""


def start_nginx(prefix: Path, port: int, backends: list[int]) -> subprocess.Popen:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise RuntimeError("nginx is not installed: apt-get install -y nginx (make cluster does this)")
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "nginx.conf").write_text(nginx_conf(prefix, port, backends))
    return subprocess.Popen(
        [nginx, "-p", f"{prefix}/", "-c", f"{prefix}/nginx.conf", "-e", f"{prefix}/error.log"],
        start_new_session=True,
    )


def stop(processes: list[subprocess.Popen], timeout: float = 40.0) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=int(os.environ.get("CLUSTER_INSTANCES", "2")))
    parser.add_argument("--port", type=int, default=int(os.environ.get("CLUSTER_PORT", "8080")))
    args = parser.parse_args()
    env = dict(os.environ)
    env.setdefault("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/multi_llm_api")
    env.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    env.setdefault("RATE_LIMIT_STORAGE_URL", env["REDIS_URL"])
    env.setdefault("TRUSTED_PROXIES", "1")
    env.setdefault("APP_ENV", "production")
    ensure_database(env["DATABASE_URL"])
    migrate(env)
    run_dir = Path(tempfile.mkdtemp(prefix="mla-cluster-"))
    ports = [free_port() for _ in range(args.instances)]
    processes = [start_instance(port, env, run_dir / f"instance-{port}.log") for port in ports]
    try:
        for port in ports:
            wait_healthy(f"http://127.0.0.1:{port}")
        processes.append(start_nginx(run_dir / "nginx", args.port, ports))
        wait_healthy(f"http://127.0.0.1:{args.port}")
        print(
            f"{args.instances} instances behind nginx on http://127.0.0.1:{args.port} (logs in {run_dir}); Ctrl-C stops"
        )
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
        while all(process.poll() is None for process in processes):
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop(processes)


if __name__ == "__main__":
    sys.exit(main())
