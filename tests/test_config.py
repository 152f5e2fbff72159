from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy import text

from app import create_app
from app.config import ConfigError, ProductionConfig, TestingConfig, load_config
from app.extensions import db
from tests.fresh_app import ROOT, STRONG, run_in_fresh_app


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("SECRET_KEY", "JWT_SECRET_KEY", "APP_ENV", "FLASK_ENV", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    ("secret", "reason"),
    [("", "is not set"), ("change-me", "example value"), ("short-secret", "shorter than 32 bytes")],
)
def test_production_refuses_weak_secrets(clean_env, secret, reason):
    clean_env.setenv("SECRET_KEY", STRONG)
    clean_env.setenv("JWT_SECRET_KEY", secret)
    with pytest.raises(ConfigError, match=reason):
        ProductionConfig()


def test_production_accepts_strong_secrets(clean_env):
    clean_env.setenv("SECRET_KEY", STRONG)
    clean_env.setenv("JWT_SECRET_KEY", "y" * 40)
    config = ProductionConfig()
    assert config.JWT_SECRET_KEY == "y" * 40


def test_development_generates_ephemeral_secrets_and_warns(clean_env):
    clean_env.setenv("APP_ENV", "development")
    config = load_config()
    assert len(config.SECRET_KEY) >= 32 and len(config.JWT_SECRET_KEY) >= 32
    assert config.SECRET_KEY != config.JWT_SECRET_KEY
    assert any("ephemeral secrets" in warning for warning in config.STARTUP_WARNINGS)


def test_environment_variables_are_read(clean_env):
    clean_env.setenv("APP_ENV", "development")
    clean_env.setenv("JWT_ACCESS_TOKEN_EXPIRES", "5m")
    clean_env.setenv("JWT_REFRESH_TOKEN_EXPIRES", "7d")
    clean_env.setenv("DATABASE_URL", "postgres://u@db:5432/app")
    clean_env.setenv("RATE_LIMIT_PER_MINUTE", "17")
    clean_env.setenv("CORS_ORIGINS", "https://a.example, https://b.example")
    config = load_config()
    assert timedelta(minutes=5) == config.JWT_ACCESS_TOKEN_EXPIRES
    assert timedelta(days=7) == config.JWT_REFRESH_TOKEN_EXPIRES
    assert config.SQLALCHEMY_DATABASE_URI == "postgresql+psycopg://u@db:5432/app"
    assert config.RATE_LIMIT_DEFAULT == "17 per minute"
    assert config.CORS_ORIGINS == ["https://a.example", "https://b.example"]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("RATE_LIMIT_PER_MINUTE", "lots", "RATE_LIMIT_PER_MINUTE"),
        ("RATE_LIMIT_ENABLED", "maybe", "RATE_LIMIT_ENABLED"),
        ("JWT_ACCESS_TOKEN_EXPIRES", "soon", "JWT_ACCESS_TOKEN_EXPIRES"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL"),
        # float() accepts these and no minimum refuses NaN: an external call then failed with a 500.
        ("EXTERNAL_API_TIMEOUT", "nan", "EXTERNAL_API_TIMEOUT must be a finite number"),
        ("EXTERNAL_API_TIMEOUT", "inf", "EXTERNAL_API_TIMEOUT must be a finite number"),
        ("LLM_REQUEST_TIMEOUT", "NaN", "LLM_REQUEST_TIMEOUT must be a finite number"),
        ("LLM_MAX_RETRY_AFTER", "Infinity", "LLM_MAX_RETRY_AFTER must be a finite number"),
        ("BATCH_FLUSH_INTERVAL", "nan", "BATCH_FLUSH_INTERVAL must be a finite number"),
    ],
)
def test_invalid_values_stop_the_start_naming_the_variable(clean_env, name, value, message):
    clean_env.setenv("APP_ENV", "development")
    clean_env.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        load_config()


@pytest.mark.parametrize("name", ["AUTH_RATE_LIMIT", "AUTH_ACCOUNT_RATE_LIMIT"])
@pytest.mark.parametrize("value", ["garbage", "10 per fortnight", "0 per minute"])
def test_unusable_login_limits_stop_the_start(clean_env, name, value):
    # The limiter parses these only when login or register is called: each call would be a 500.
    clean_env.setenv("APP_ENV", "development")
    clean_env.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_config()


def test_empty_login_limits_mean_the_default(clean_env, monkeypatch):
    clean_env.setenv("APP_ENV", "development")
    monkeypatch.setenv("AUTH_RATE_LIMIT", "")
    monkeypatch.setenv("AUTH_ACCOUNT_RATE_LIMIT", "5/minute;50/hour")
    config = load_config()
    assert config.AUTH_RATE_LIMIT == "10 per minute"
    assert config.AUTH_ACCOUNT_RATE_LIMIT == "5/minute;50/hour"


def test_unknown_environment_is_refused(clean_env):
    clean_env.setenv("APP_ENV", "staging-ish")
    with pytest.raises(ConfigError, match="APP_ENV"):
        load_config()


def test_run_py_exits_non_zero_in_production_without_secrets(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "FLASK_ENV"}
    # Set but empty: python-dotenv never overrides a variable that exists, so a developer's .env cannot
    # supply the secrets this test withholds.
    env.update(
        {
            "APP_ENV": "production",
            "DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
            "SECRET_KEY": "",
            "JWT_SECRET_KEY": "",
        }
    )
    result = subprocess.run(
        [sys.executable, str(ROOT / "run.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr
    assert "Traceback" not in result.stderr


_LOADED_STORES = """
import os, sys
from app import create_app
create_app()
print(",".join(m for m in ("redis", "sqlalchemy.dialects.postgresql") if m in sys.modules))
"""


@pytest.mark.parametrize("redis_url", ["", "redis://127.0.0.1:6379/15"])
def test_redis_client_is_loaded_only_where_redis_is_configured(tmp_path, redis_url):
    # On a single machine, redis-py (and what it imports) would cost a worker ~6 MB, the PostgreSQL
    # dialect of the Redis stream's inserts ~2 MB more.
    output = run_in_fresh_app(_LOADED_STORES, tmp_path, redis_url)
    loaded = set(filter(None, output.strip().split(",")))
    if redis_url:
        assert "redis" in loaded  # the probe sees what it looks for
    else:
        assert loaded == set()


_LOADED_CLIENT = """
import sys
from app import create_app
from app.errors import DestinationNotAllowed
app = create_app()
print("httpx" in sys.modules)
try:
    app.extensions["external"].call("GET", "http://127.0.0.1/")
except DestinationNotAllowed:
    print("refused")
print("httpx" in sys.modules)
"""


def test_the_external_proxys_http_client_is_loaded_by_its_first_call(tmp_path):
    # httpx and the transport under it (~2.5 MB a worker) are not held by a worker that never proxies a call.
    assert run_in_fresh_app(_LOADED_CLIENT, tmp_path).split() == ["False", "refused", "True"]


def test_a_sqlite_file_is_written_through_a_write_ahead_log(tmp_path):
    # A commit appends to the log rather than syncing a rollback journal and the pages (the usage
    # flush's commit was ~0.1 ms of CPU per proxied call), and readers are not blocked by a writer.
    config = TestingConfig()
    config.SQLALCHEMY_DATABASE_URI = f"sqlite:///{tmp_path / 'app.db'}"
    with create_app(config).app_context():
        assert db.session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert db.session.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
        db.session.remove()
        db.engine.dispose()
    with create_app(TestingConfig()).app_context():  # in memory: nothing to log
        assert db.session.execute(text("PRAGMA journal_mode")).scalar() == "memory"
