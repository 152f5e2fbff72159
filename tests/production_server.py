"""One production server (gunicorn with gunicorn.conf.py) as a separate process, for the tests that need
the real worker: SQLite in the test's folder, one worker, fresh secrets, the log in server.log."""

from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from scripts.cluster import free_port, migrate, start_instance, wait_healthy


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    database: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def start_server(folder: Path, **settings: str) -> Server:
    """Started and healthy; `settings` are environment variables on top of the production defaults."""
    database = folder / "server.db"
    env = {
        **os.environ,
        "APP_ENV": "production",
        "SECRET_KEY": secrets.token_hex(32),
        "JWT_SECRET_KEY": secrets.token_hex(32),
        "DATABASE_URL": f"sqlite:///{database}",
        "GUNICORN_WORKERS": "1",
        "LOG_LEVEL": "WARNING",
        **settings,
    }
    migrate(env)
    port = free_port()
    log = folder / "server.log"
    server = Server(start_instance(port, env, log), port, database, log)
    wait_healthy(server.url)
    return server
