"""Production server settings: `gunicorn -c gunicorn.conf.py wsgi:app`.

gevent workers: an LLM gateway spends its life waiting on upstreams, and one gevent worker holds
hundreds of waiting requests. The worker monkey-patches the standard library before it imports the
app (no preload_app), so httpx, redis-py and psycopg (which checks for gevent at import) all yield.
"""

import multiprocessing
import os

from dotenv import load_dotenv

load_dotenv()

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '5000')}"  # noqa: S104  (a server behind a proxy)
workers = int(os.environ.get("GUNICORN_WORKERS", multiprocessing.cpu_count()))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gevent")
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "1000"))
# Streams can be long; gevent workers heartbeat on their own, so this only bounds a stuck worker.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = 5
preload_app = False
accesslog = None  # the app writes its own JSON access log line per request
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()


def worker_exit(server, worker):
    """Write the usage and audit rows still queued before the worker goes (SIGTERM, max_requests)."""
    import sys

    app = getattr(sys.modules.get("wsgi"), "app", None)
    if app is not None:
        for name in ("usage_writer", "external_audit"):
            writer = app.extensions.get(name)
            if writer is not None:
                writer.flush()


def child_exit(server, worker):
    # prometheus-client multiprocess mode: a dead worker's live gauges (in flight) stop counting.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
