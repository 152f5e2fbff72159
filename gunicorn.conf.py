"""Production server settings: `gunicorn -c gunicorn.conf.py wsgi:app`.

gevent workers: an LLM gateway spends its life waiting on upstreams, and one gevent worker holds
hundreds of waiting requests. The worker monkey-patches the standard library before it imports the
app (no preload_app), so httpx, redis-py and psycopg (which checks for gevent at import) all yield.
"""

import math
import os

from dotenv import load_dotenv

load_dotenv()


def _env_number(name: str, default: float, minimum: float, integer: bool = True, alias: str = "") -> float:
    """A numeric setting from the environment (empty means the default), refused at start with the
    variable's name when unusable: gunicorn takes 0 workers or 0 connections and then serves nothing."""
    raw = (os.environ.get(name) or (os.environ.get(alias) if alias else "") or "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < minimum:
        kind = "an integer" if integer else "a number"
        # SystemExit: gunicorn prints the message alone and exits 1 (any other error gets a traceback).
        raise SystemExit(f"configuration error: {name} must be {kind} of at least {minimum:g}; got {raw!r}")
    return value


bind = f"{os.environ.get('HOST') or '0.0.0.0'}:{os.environ.get('PORT') or '5000'}"  # noqa: S104  (a server behind a proxy)
# Empty values (as .env.example leaves them) mean the default.
workers = _env_number("GUNICORN_WORKERS", os.cpu_count() or 1, minimum=1)
# gevent_worker/: gunicorn's gevent worker on gevent's HTTP server, with gunicorn's keep-alive limit.
worker_class = os.environ.get("GUNICORN_WORKER_CLASS") or "gevent_worker.Worker"
worker_connections = _env_number("GUNICORN_WORKER_CONNECTIONS", 1000, minimum=1)
# Only for GUNICORN_WORKER_CLASS=gthread (measured against gevent in bench/: see bench/README.md).
threads = _env_number("GUNICORN_THREADS", 1, minimum=1)
# Streams can be long; gevent workers heartbeat on their own, so this only bounds a stuck worker.
timeout = _env_number("GUNICORN_TIMEOUT", 120, minimum=0)
# SIGTERM: /api/ready turns 503 for DRAIN_DELAY seconds, then in-flight requests and streams get
# GRACEFUL_TIMEOUT (the worker's own wait, set in post_worker_init), then queued rows are written.
DRAIN_DELAY = _env_number("DRAIN_DELAY", 0.0, minimum=0, integer=False)
GRACEFUL_TIMEOUT = _env_number("GRACEFUL_TIMEOUT", 30, minimum=0, alias="GUNICORN_GRACEFUL_TIMEOUT")
# Seconds a worker has, after its in-flight requests, to write the rows it queued (and for gunicorn's
# one-second polls on the way).
FLUSH_TIME = 10
# The master SIGKILLs a worker this long after its SIGTERM. It must cover all three stages: counted
# from the signal as GRACEFUL_TIMEOUT alone, a drain as long as it left nothing for in-flight requests
# and killed the worker before it wrote its queued rows.
graceful_timeout = math.ceil(DRAIN_DELAY) + GRACEFUL_TIMEOUT + FLUSH_TIME
# Seconds an idle client connection stays open. Behind a proxy that reuses connections (nginx's upstream
# keepalive, a cloud load balancer), the proxy must drop idle ones first: raise this above its idle timeout,
# or a request sent as the worker closes an idle connection ends in a 502.
keepalive = _env_number("GUNICORN_KEEPALIVE", 5, minimum=0)
preload_app = False
# gunicorn's control socket (`gunicornc`, since 25.1) runs an asyncio thread in the master and listens at one
# path per user, $HOME/.gunicorn/gunicorn.ctl, which two instances on one host would share. Signals manage
# the server instead (README, "Production").
control_socket_disable = True
accesslog = None  # the app writes its own JSON access log line per request
errorlog = "-"
loglevel = (os.environ.get("LOG_LEVEL") or "info").lower()


def _flask_app(worker):
    """The worker's Flask app, once it has loaded one."""
    app = getattr(worker, "wsgi", None)
    return app if app is not None and hasattr(app, "extensions") else None


def post_worker_init(worker):
    from app.services.lifecycle import install_drain_handler, keep_startup_objects_out_of_gc, start_writers

    install_drain_handler(worker, delay=DRAIN_DELAY, in_flight_timeout=GRACEFUL_TIMEOUT)
    app = _flask_app(worker)
    if app is not None:
        start_writers(app)
    keep_startup_objects_out_of_gc()


def worker_exit(server, worker):
    from app.services.lifecycle import flush_writers

    app = _flask_app(worker)
    if app is not None:
        flush_writers(app)


def child_exit(server, worker):
    # prometheus-client multiprocess mode: a dead worker's live gauges (in flight) stop counting.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
