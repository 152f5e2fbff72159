"""Settings read from the environment once, validated at start.

One class per environment; `load_config(name)` picks it from FLASK_ENV / APP_ENV. A .env file in the
working directory is read by run.py and gunicorn.conf.py (python-dotenv) before this module is used.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
from datetime import timedelta
from pathlib import Path

# Values shipped in .env.example and the docs: a deployment that kept them has no secret at all.
EXAMPLE_SECRETS = frozenset(
    {
        "change-me",
        "changeme",
        "secret",
        "your-secret-key",
        "your-jwt-secret-key",
        "dev-secret-key",
        "replace-with-64-random-hex-characters",
    }
)
MIN_SECRET_BYTES = 32


class ConfigError(Exception):
    """The configuration is unusable; the message says which variable and why."""


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool) -> bool:
    raw = env_str(name)
    if not raw:
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def env_int(name: str, default: int, minimum: int = 0) -> int:
    raw = env_str(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def env_float(name: str, default: float, minimum: float = 0.0) -> float:
    raw = env_str(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    # float() also takes "nan" and "inf": no comparison refuses NaN, and either one made every request
    # that used the value fail (an httpx timeout of NaN or infinity is an error at call time).
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {raw!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def env_list(name: str) -> list[str]:
    return [item.strip() for item in env_str(name).split(",") if item.strip()]


def env_rate_limit(name: str, default: str) -> str:
    """A Flask-Limiter limit such as "10 per minute" or "10/minute;100/hour", checked now: the limiter
    parses it only when a limited route is called, and a bad one would fail every such request."""
    from limits import parse_many  # Flask-Limiter's own parser

    raw = env_str(name) or default
    try:
        items = parse_many(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a rate limit such as '10 per minute'; got {raw!r}") from None
    if any(item.amount < 1 for item in items):
        raise ConfigError(f"{name} must allow at least one request per period; got {raw!r}")
    return raw


def env_duration(name: str, default: timedelta) -> timedelta:
    """Seconds as an integer, or a number with a unit: 900, 15m, 12h, 30d."""
    raw = env_str(name)
    if not raw:
        return default
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (raw[:-1], raw[-1].lower()) if raw[-1].lower() in units else (raw, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise ConfigError(
            f"{name} must be seconds or a duration such as 15m, 12h, 30d; got {raw!r}"
        ) from None
    if seconds <= 0:
        raise ConfigError(f"{name} must be positive, got {raw!r}")
    return timedelta(seconds=seconds)


def normalise_database_url(url: str) -> str:
    """Accept the postgres:// and postgresql:// spellings and drive them with psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def default_database_url() -> str:
    instance = Path(__file__).resolve().parent.parent / "instance"
    return f"sqlite:///{instance / 'multi_llm_api.db'}"


class Config:
    ENV_NAME = "base"
    DEBUG = False
    TESTING = False
    REQUIRE_STRONG_SECRETS = False

    def __init__(self) -> None:
        self.STARTUP_WARNINGS: list[str] = []
        self.SECRET_KEY = env_str("SECRET_KEY")
        self.JWT_SECRET_KEY = env_str("JWT_SECRET_KEY")
        self.SQLALCHEMY_DATABASE_URI = normalise_database_url(
            env_str("DATABASE_URL") or default_database_url()
        )
        # hide_parameters: a failed statement's message (logged) never carries its values (hashes, tokens).
        self.SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True, "hide_parameters": True}
        self.REDIS_URL = env_str("REDIS_URL")

        self.JWT_ACCESS_TOKEN_EXPIRES = env_duration("JWT_ACCESS_TOKEN_EXPIRES", timedelta(minutes=15))
        self.JWT_REFRESH_TOKEN_EXPIRES = env_duration("JWT_REFRESH_TOKEN_EXPIRES", timedelta(days=30))
        self.JWT_ALGORITHM = "HS256"
        self.JWT_DECODE_ALGORITHMS = ["HS256"]
        self.JWT_TOKEN_LOCATION = ["headers"]

        self.MAX_CONTENT_LENGTH = env_int("MAX_CONTENT_LENGTH", 1024 * 1024, minimum=1024)

        self.RATELIMIT_ENABLED = env_bool("RATE_LIMIT_ENABLED", True)
        self.RATE_LIMIT_PER_MINUTE = env_int("RATE_LIMIT_PER_MINUTE", 60, minimum=1)
        self.RATE_LIMIT_DEFAULT = f"{self.RATE_LIMIT_PER_MINUTE} per minute"
        self.AUTH_RATE_LIMIT = env_rate_limit("AUTH_RATE_LIMIT", "10 per minute")
        # Login attempts on one account from addresses it has not logged in from, all together.
        self.AUTH_ACCOUNT_RATE_LIMIT = env_rate_limit("AUTH_ACCOUNT_RATE_LIMIT", "100 per hour")
        self.RATELIMIT_STORAGE_URI = env_str("RATE_LIMIT_STORAGE_URL", "memory://")
        self.RATELIMIT_KEY_PREFIX = "mla-limit"

        self.CORS_ORIGINS = env_list("CORS_ORIGINS") or ["*"]
        self.LOG_LEVEL = env_str("LOG_LEVEL").upper() or "INFO"
        if self.LOG_LEVEL not in logging.getLevelNamesMapping():
            # logging would refuse it later with a bare ValueError that names no variable.
            raise ConfigError(
                f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL; got {self.LOG_LEVEL!r}"
            )
        self.TRUSTED_PROXIES = env_int("TRUSTED_PROXIES", 0)

        # Usage limits for every user without their own (0 = unlimited); admins set per-user ones.
        self.LLM_DEFAULT_RPM = env_int("LLM_DEFAULT_RPM", 0)
        self.LLM_DEFAULT_TPM = env_int("LLM_DEFAULT_TPM", 0)
        self.LLM_DEFAULT_DAILY_BUDGET_USD = env_float("LLM_DEFAULT_DAILY_BUDGET_USD", 0.0)
        self.LLM_DEFAULT_MONTHLY_BUDGET_USD = env_float("LLM_DEFAULT_MONTHLY_BUDGET_USD", 0.0)
        # The completion a request without max_tokens is assumed to reach, when its worst case is reserved.
        self.LLM_RESERVE_MAX_TOKENS = env_int("LLM_RESERVE_MAX_TOKENS", 4096, minimum=1)
        self.LIMITS_CACHE_SECONDS = env_float("LIMITS_CACHE_SECONDS", 5.0)
        self.METRICS_TOKEN = env_str("METRICS_TOKEN")
        if not self.REDIS_URL and any(
            (
                self.LLM_DEFAULT_RPM,
                self.LLM_DEFAULT_TPM,
                self.LLM_DEFAULT_DAILY_BUDGET_USD,
                self.LLM_DEFAULT_MONTHLY_BUDGET_USD,
            )
        ):
            self.STARTUP_WARNINGS.append(
                "usage limits are counted per process without REDIS_URL: with several workers or instances "
                "each one allows the full limit"
            )

        self.EXTERNAL_API_TIMEOUT = env_float("EXTERNAL_API_TIMEOUT", 30.0, minimum=0.1)
        self.EXTERNAL_API_MAX_RETRIES = env_int("EXTERNAL_API_MAX_RETRIES", 3)
        self.EXTERNAL_API_BACKOFF_BASE = env_float("EXTERNAL_API_BACKOFF_BASE", 0.25)
        self.EXTERNAL_API_BACKOFF_CAP = env_float("EXTERNAL_API_BACKOFF_CAP", 8.0)
        self.EXTERNAL_API_MAX_RESPONSE_BYTES = env_int("EXTERNAL_API_MAX_RESPONSE_BYTES", 10 * 1024 * 1024, 1)
        self.EXTERNAL_API_MAX_REDIRECTS = env_int("EXTERNAL_API_MAX_REDIRECTS", 5)
        self.EXTERNAL_API_ALLOWED_HOSTS = env_list("EXTERNAL_API_ALLOWED_HOSTS")
        self.EXTERNAL_API_ALLOW_PRIVATE_NETWORKS = env_list("EXTERNAL_API_ALLOW_PRIVATE_NETWORKS")
        self.EXTERNAL_API_ALLOWED_PORTS = env_str("EXTERNAL_API_ALLOWED_PORTS", "80,443,1024-65535")
        self.EXTERNAL_API_CA_BUNDLE = env_str("EXTERNAL_API_CA_BUNDLE")

        # Seconds between batch inserts of audit and usage rows (what a SIGKILL can lose at most).
        self.BATCH_FLUSH_INTERVAL = env_float("BATCH_FLUSH_INTERVAL", 0.5, minimum=0.01)
        # With REDIS_URL, usage rows go through this Redis stream (app/services/stream_writer.py).
        self.USAGE_STREAM_KEY = env_str("USAGE_STREAM_KEY", "multillm:usage")
        # Unwritten rows it keeps while the database is down, past which the oldest are dropped: about
        # 0.6 KB each in Redis, so ~300 MB at the cap, or some 80 minutes of outage at 100 calls a second.
        self.USAGE_STREAM_MAXLEN = env_int("USAGE_STREAM_MAXLEN", 500_000, minimum=1000)
        # Seconds a row read by a consumer that then died waits before another consumer writes it.
        self.USAGE_CLAIM_IDLE_SECONDS = env_float("USAGE_CLAIM_IDLE_SECONDS", 15.0, minimum=0.1)
        # The audit rows of external calls take their own stream, with the same cap and claim idle time.
        self.EXTERNAL_AUDIT_STREAM_KEY = env_str("EXTERNAL_AUDIT_STREAM_KEY", "multillm:external_calls")

        self.MODELS_CONFIG = env_str("MODELS_CONFIG")
        self.LLM_REQUEST_TIMEOUT = env_float("LLM_REQUEST_TIMEOUT", 600.0, minimum=0.1)
        self.LLM_CONNECT_TIMEOUT = env_float("LLM_CONNECT_TIMEOUT", 10.0, minimum=0.1)
        self.LLM_FIRST_TOKEN_TIMEOUT = env_float("LLM_FIRST_TOKEN_TIMEOUT", 60.0, minimum=0.1)
        self.LLM_STREAM_IDLE_TIMEOUT = env_float("LLM_STREAM_IDLE_TIMEOUT", 60.0, minimum=0.1)
        self.LLM_STREAM_HEARTBEAT = env_float("LLM_STREAM_HEARTBEAT", 1.0, minimum=0.05)
        # Routing across a model's targets (per-model overrides live in MODELS_CONFIG under retries:).
        self.LLM_REQUEST_BUDGET = env_float("LLM_REQUEST_BUDGET", 900.0, minimum=0.1)
        self.LLM_MAX_RETRIES_PER_TARGET = env_int("LLM_MAX_RETRIES_PER_TARGET", 2)
        self.LLM_RETRY_BACKOFF_BASE = env_float("LLM_RETRY_BACKOFF_BASE", 0.5, minimum=0.01)
        self.LLM_RETRY_BACKOFF_CAP = env_float("LLM_RETRY_BACKOFF_CAP", 8.0, minimum=0.01)
        self.LLM_MAX_RETRY_AFTER = env_float("LLM_MAX_RETRY_AFTER", 30.0)
        self.LLM_BREAKER_FAILURES = env_int("LLM_BREAKER_FAILURES", 5, minimum=1)
        self.LLM_BREAKER_COOLDOWN = env_float("LLM_BREAKER_COOLDOWN", 30.0, minimum=0.01)

        self._settle_secrets()

    def _settle_secrets(self) -> None:
        problems = [
            problem
            for name in ("SECRET_KEY", "JWT_SECRET_KEY")
            if (problem := weak_secret_reason(name, getattr(self, name)))
        ]
        if not problems:
            return
        if self.REQUIRE_STRONG_SECRETS:
            raise ConfigError("refusing to start: " + "; ".join(problems))
        # Outside production a missing secret is replaced for this process only: tokens die on restart.
        for name in ("SECRET_KEY", "JWT_SECRET_KEY"):
            if weak_secret_reason(name, getattr(self, name)):
                setattr(self, name, secrets.token_hex(32))
        if not self.TESTING:
            self.STARTUP_WARNINGS.append(
                "using ephemeral secrets (" + "; ".join(problems) + "); set them in .env to keep tokens valid"
            )


def weak_secret_reason(name: str, value: str) -> str | None:
    if not value:
        return f"{name} is not set"
    if value.lower() in EXAMPLE_SECRETS:
        return f"{name} is an example value from the documentation"
    if len(value.encode()) < MIN_SECRET_BYTES:
        return f"{name} is shorter than {MIN_SECRET_BYTES} bytes"
    return None


class DevelopmentConfig(Config):
    ENV_NAME = "development"
    DEBUG = True


class TestingConfig(Config):
    __test__ = False  # not a pytest test class despite the name
    ENV_NAME = "testing"
    TESTING = True

    def __init__(self) -> None:
        super().__init__()
        self.SQLALCHEMY_DATABASE_URI = "sqlite://"


class ProductionConfig(Config):
    ENV_NAME = "production"
    REQUIRE_STRONG_SECRETS = True


CONFIGS: dict[str, type[Config]] = {
    "development": DevelopmentConfig,
    "testing": TestingConfig,
    "production": ProductionConfig,
}


def environment_name() -> str:
    return (env_str("APP_ENV") or env_str("FLASK_ENV") or "production").lower()


def load_config(name: str | None = None) -> Config:
    name = (name or environment_name()).lower()
    if name not in CONFIGS:
        raise ConfigError(f"APP_ENV / FLASK_ENV must be one of {', '.join(CONFIGS)}; got {name!r}")
    return CONFIGS[name]()
