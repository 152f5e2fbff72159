"""Run a script in a new interpreter against a fresh app: for what one process's import order or
monkey-patching would change for every other test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STRONG = "x" * 48


def run_in_fresh_app(script: str, tmp_path: Path, redis_url: str = "") -> str:
    """Run `script` in a new interpreter with production settings on SQLite; its standard output."""
    env = {
        **os.environ,
        "APP_ENV": "production",
        "SECRET_KEY": STRONG,
        "JWT_SECRET_KEY": STRONG + "j",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "REDIS_URL": redis_url,
        "RATE_LIMIT_STORAGE_URL": "memory://",
    }
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
