"""What gunicorn.conf.py does in each worker once it has loaded the app."""

from __future__ import annotations

import gc
import os
import runpy
import secrets
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from app.services import lifecycle
from scripts.cluster import free_port

CONF = Path(__file__).resolve().parent.parent / "gunicorn.conf.py"


@pytest.fixture
def post_worker_init(monkeypatch):
    monkeypatch.setattr("dotenv.load_dotenv", lambda *args, **kwargs: None)  # no .env in the test process
    # pytest's own SIGTERM handling stays.
    monkeypatch.setattr(lifecycle, "install_drain_handler", lambda worker, **timing: None)
    yield runpy.run_path(str(CONF))["post_worker_init"]
    gc.unfreeze()


def test_objects_alive_when_the_worker_starts_are_left_out_of_later_collections(post_worker_init):
    gc.unfreeze()
    module_object = lifecycle.keep_startup_objects_out_of_gc
    post_worker_init(SimpleNamespace(wsgi=None))
    assert gc.get_freeze_count() > 10_000  # the modules, classes and functions loaded so far
    assert not any(obj is module_object for obj in gc.get_objects())  # frozen: no generation holds it
    later = [object()]
    assert any(obj is later for obj in gc.get_objects())  # what comes after is still collected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GUNICORN_WORKERS", "0"),
        ("GUNICORN_WORKERS", "two"),
        ("GUNICORN_WORKER_CONNECTIONS", "0"),
        ("DRAIN_DELAY", "soon"),
        ("GRACEFUL_TIMEOUT", "-1"),
    ],
)
def test_unusable_server_settings_stop_gunicorn_at_start_naming_the_variable(tmp_path, name, value):
    # With 0 workers or 0 connections gunicorn ran on and served nothing; a word was a traceback from the
    # config file, or (DRAIN_DELAY) a worker that failed to boot without saying which variable was wrong.
    env = {
        **os.environ,
        "APP_ENV": "production",
        "SECRET_KEY": secrets.token_hex(32),
        "JWT_SECRET_KEY": secrets.token_hex(32),
        "DATABASE_URL": f"sqlite:///{tmp_path}/server.db",
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "GUNICORN_WORKERS": "1",
        name: value,
    }
    try:
        result = subprocess.run(
            [sys.executable, "-m", "gunicorn", "-c", str(CONF), "wsgi:app"],
            cwd=CONF.parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"gunicorn kept running with {name}={value}")
    assert result.returncode != 0
    assert f"{name} must be" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_example_environment_serves_with_the_measured_worker(monkeypatch):
    # `make run` and `make cluster` write .env from .env.example, and gunicorn.conf.py loads it: a worker
    # class set there replaced gevent_worker.Worker (the one bench/ measured) with gunicorn's plain one.
    from dotenv import dotenv_values

    example = dotenv_values(CONF.parent / ".env.example")
    for name, value in example.items():
        monkeypatch.setenv(name, value or "")
    monkeypatch.setattr("dotenv.load_dotenv", lambda *args, **kwargs: None)
    settings = runpy.run_path(str(CONF))
    assert settings["worker_class"] == "gevent_worker.Worker"
    assert settings["workers"] >= 1 and settings["worker_connections"] == 1000
