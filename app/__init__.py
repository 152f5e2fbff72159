"""The application factory: config, extensions, request hooks, blueprints, error handlers."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

from flask import request
from flask_openapi3 import Info, OpenAPI
from sqlalchemy import event
from werkzeug.middleware.proxy_fix import ProxyFix

from app.config import Config, load_config
from app.db_migrations import MigrationCommands
from app.error_handlers import raise_validation_failed, register_error_handlers
from app.extensions import cors, db, jwt
from app.json_provider import OrjsonProvider
from app.logging_setup import configure_logging
from app.middleware.no_sessions import NoSessions
from app.version import __version__


def create_app(config: str | Config | None = None) -> OpenAPI:
    settings = config if isinstance(config, Config) else load_config(config)
    configure_logging(settings.LOG_LEVEL)
    for warning in settings.STARTUP_WARNINGS:
        logging.getLogger("app").warning(warning)

    from app.routes.docs import SECURITY_SCHEMES

    app = OpenAPI(
        __name__,
        info=Info(title="Multi-LLM API", version=__version__),
        security_schemes=SECURITY_SCHEMES,
        validation_error_status=400,
        validation_error_callback=raise_validation_failed,
        doc_prefix="/docs",
        doc_url="/openapi.json",
        static_folder=None,
    )
    app.config.from_object(settings)
    app.session_interface = NoSessions()
    _ensure_sqlite_directory(settings.SQLALCHEMY_DATABASE_URI)
    app.json = OrjsonProvider(app)
    if settings.TRUSTED_PROXIES:
        # Behind N proxies, X-Forwarded-For names the client (rate limits are per client address).
        app.wsgi_app = ProxyFix(
            app.wsgi_app, x_for=settings.TRUSTED_PROXIES, x_proto=settings.TRUSTED_PROXIES
        )

    _bind_extensions(app, settings)
    _register_blueprints(app)
    register_error_handlers(app)
    return app


def _skip_cors_without_origin(app: OpenAPI) -> None:
    """flask-cors' after_request hook matches the path against its resources on every response (~2 % of a
    proxied call) before finding that a request without an Origin gets no CORS headers (always_send=False):
    such requests now skip it. Error responses still pass through flask-cors' own exception wrapper."""
    hooks = app.after_request_funcs[None]
    index = next(i for i, hook in enumerate(hooks) if hook.__name__ == "cors_after_request")
    cors_hook = hooks[index]

    def cors_after_request_with_origin(response: Any) -> Any:
        return cors_hook(response) if request.environ.get("HTTP_ORIGIN") else response

    hooks[index] = cors_after_request_with_origin


def _ensure_sqlite_directory(url: str) -> None:
    """A fresh checkout has no instance/ folder; SQLite creates the file but not its directory."""
    if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        # If it cannot be made, SQLite reports the path itself and /api/health says the database is unavailable.
        with contextlib.suppress(OSError):
            os.makedirs(os.path.dirname(url[len("sqlite:///") :]) or ".", exist_ok=True)


def _use_write_ahead_log(app: OpenAPI) -> None:
    """A SQLite file in write-ahead-log mode, synchronous=NORMAL: a commit appends to the log instead of
    writing and syncing a rollback journal and the pages (the usage flush's commit cost ~0.1 ms of CPU per
    proxied call), and readers in other workers are not blocked while one writes. A committed transaction
    survives the process being killed; only a power loss or an OS crash can take the last ones back."""
    with app.app_context():
        engine = db.engine
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return

    @event.listens_for(engine, "connect")
    def set_pragmas(connection: Any, record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # stored in the file; every connection asks, the first sets
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def _bind_extensions(app: OpenAPI, settings: Config) -> None:
    from app import models  # noqa: F401  (registers the tables)
    from app.middleware.auth_middleware import load_identity
    from app.middleware.rate_limits import RateLimits
    from app.middleware.request_context import check_json_body, start_request, tag_response
    from app.services.api_key_verifier import ApiKeyVerifier
    from app.services.external_proxy import ExternalProxy, settings_from_config
    from app.services.revocation import DatabaseRevocations, RedisRevocations
    from app.utils.ttl_cache import TTLCache

    db.init_app(app)
    _use_write_ahead_log(app)
    app.cli.add_command(MigrationCommands())
    jwt.init_app(app)
    cors.init_app(
        app,
        resources={r"/api/*": {}, r"/v1/*": {}},
        origins=settings.CORS_ORIGINS,
        # Browsers send Origin with every cross-origin request; a request without one (a program, a
        # server) needs no CORS headers, and working them out was ~3 % of a proxied call's instructions.
        always_send=False,
        expose_headers=[
            "X-Request-ID",
            "Retry-After",
            "X-RateLimit-Limit",
            "X-RateLimit-Remaining",
            # Which target served an LLM call (app/services/gateway/router.py RouteInfo.headers).
            "x-multillm-provider",
            "x-multillm-model",
            "x-multillm-attempts",
            "x-multillm-fallback",
        ],
    )
    _skip_cors_without_origin(app)
    # Order matters: the request id and the caller's identity are known before the limits key on them.
    app.before_request(start_request)
    app.before_request(check_json_body)
    app.before_request(load_identity)
    app.after_request(tag_response)
    RateLimits(
        settings.RATELIMIT_STORAGE_URI,
        settings.RATE_LIMIT_DEFAULT,
        settings.RATELIMIT_KEY_PREFIX,
        enabled=settings.RATELIMIT_ENABLED,
    ).init_app(app)

    redis_client = _redis_client(app, settings)
    app.extensions["redis"] = redis_client
    app.extensions["verified_tokens"] = TTLCache(ttl=60.0, max_size=10_000)
    app.extensions["gateway"] = _build_gateway(settings, redis_client)
    app.extensions["external"] = ExternalProxy(settings_from_config(settings))
    app.extensions["revocations"] = (
        RedisRevocations(redis_client, settings.JWT_REFRESH_TOKEN_EXPIRES)
        if redis_client
        else DatabaseRevocations()
    )
    app.extensions["api_keys"] = ApiKeyVerifier(redis_client)
    _bind_usage(app, settings, redis_client)


def _redis_client(app: OpenAPI, settings: Config) -> Any:
    """The shared Redis client, or None on a single machine: redis-py (and what it imports, ~6 MB per
    worker) is loaded only where REDIS_URL is set."""
    if not settings.REDIS_URL:
        return None
    from app.error_handlers import register_redis_errors
    from app.utils.redis_client import redis_from_url

    register_redis_errors(app)
    return redis_from_url(settings.REDIS_URL)


def _bind_usage(app: OpenAPI, settings: Config, redis_client: Any) -> None:
    from app.models import ExternalCall, UsageRecord
    from app.services.limits import LimitService, limits_from_config
    from app.utils.metrics import install_metrics

    app.extensions["usage_writer"] = _row_writer(
        app, settings, redis_client, UsageRecord, "usage", settings.USAGE_STREAM_KEY
    )
    app.extensions["external_audit"] = _row_writer(
        app, settings, redis_client, ExternalCall, "external-call", settings.EXTERNAL_AUDIT_STREAM_KEY
    )
    app.extensions["limits"] = LimitService(
        redis_client, limits_from_config(settings), settings.LIMITS_CACHE_SECONDS
    )
    install_metrics(app)


def _row_writer(
    app: OpenAPI, settings: Config, redis_client: Any, model: type[Any], rows: str, stream_key: str
) -> Any:
    """Where the rows of each call go: through a Redis stream, so the rows of an instance that is killed
    are written by another; without Redis, from this process's memory."""
    if redis_client is None:
        from app.services.batch_writer import BatchWriter

        return BatchWriter(app, model, interval=settings.BATCH_FLUSH_INTERVAL)
    from app.services.stream_consumer import StreamSettings
    from app.services.stream_writer import StreamWriter

    stream = StreamSettings(
        key=stream_key,
        maxlen=settings.USAGE_STREAM_MAXLEN,
        claim_idle=settings.USAGE_CLAIM_IDLE_SECONDS,
        interval=settings.BATCH_FLUSH_INTERVAL,
        rows=rows,
    )
    return StreamWriter(app, model, redis_client, stream)


def _build_gateway(settings: Config, redis_client: Any) -> Any:
    from app.services.gateway.breaker import BreakerSettings, MemoryBreaker
    from app.services.gateway.catalog import load_catalog
    from app.services.gateway.chat import Gateway, Timeouts
    from app.services.gateway.router import RetrySettings, Router
    from app.services.gateway.upstream import build_provider_client

    catalog = load_catalog(settings.MODELS_CONFIG or None)
    breaker_settings = BreakerSettings(settings.LLM_BREAKER_FAILURES, settings.LLM_BREAKER_COOLDOWN)
    # Shared through Redis when there is one, so every worker and instance skips a failing target.
    if redis_client:
        from app.services.gateway.redis_breaker import RedisBreaker

        breaker: Any = RedisBreaker(redis_client, breaker_settings)
    else:
        breaker = MemoryBreaker(breaker_settings)
    retry = RetrySettings(
        max_per_target=settings.LLM_MAX_RETRIES_PER_TARGET,
        backoff_base=settings.LLM_RETRY_BACKOFF_BASE,
        backoff_cap=settings.LLM_RETRY_BACKOFF_CAP,
        max_retry_after=settings.LLM_MAX_RETRY_AFTER,
    )
    return Gateway(
        catalog,
        build_provider_client(settings.LLM_CONNECT_TIMEOUT),
        Timeouts(
            request=settings.LLM_REQUEST_TIMEOUT,
            first_chunk=settings.LLM_FIRST_TOKEN_TIMEOUT,
            stream_idle=settings.LLM_STREAM_IDLE_TIMEOUT,
            heartbeat=settings.LLM_STREAM_HEARTBEAT,
        ),
        Router(catalog, breaker, retry, budget=settings.LLM_REQUEST_BUDGET),
    )


def _register_blueprints(app: OpenAPI) -> None:
    from app.cli import register_cli
    from app.routes import admin, api, auth, compare, external, keys, llm, metrics, usage

    app.register_api(auth.bp)
    app.register_api(api.bp)
    app.register_api(keys.bp)
    app.register_api(external.bp)
    app.register_api(llm.bp)
    app.register_api(compare.bp)
    app.register_api(usage.bp)
    app.register_api(admin.bp)
    app.register_blueprint(metrics.bp)
    register_cli(app)

    @app.get("/openapi.json", doc_ui=False)
    def openapi_document():
        return app.api_doc
