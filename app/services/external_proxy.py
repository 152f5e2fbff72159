"""The external proxy as the app holds it: settings from config, one guarded client per process, audit rows.

The HTTP client stack (app/services/external_api_service.py: httpx, httpcore, h11, anyio, ~2.5 MB per
worker) is imported at the first external call, not at start-up: a worker that only serves LLM calls
never holds it."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from app.config import Config, ConfigError
from app.extensions import db
from app.models import ExternalCall
from app.models.user import utcnow
from app.services.external_settings import ExternalApiSettings, ExternalCallAudit
from app.utils.egress_guard import EgressPolicy
from app.version import __version__

if TYPE_CHECKING:
    import httpx

    from app.services.batch_writer import BatchWriter
    from app.services.stream_writer import StreamWriter

    RowWriter = BatchWriter | StreamWriter


def parse_port_ranges(spec: str) -> tuple[tuple[int, int], ...]:
    """ "80,443,1024-65535" -> ((80, 80), (443, 443), (1024, 65535))."""
    ranges = []
    for part in (item.strip() for item in spec.split(",")):
        if not part:
            continue
        low, _, high = part.partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            raise ConfigError(
                f"EXTERNAL_API_ALLOWED_PORTS: {part!r} is not a port or a range like 1024-65535"
            ) from None
        if not 1 <= first <= last <= 65535:
            raise ConfigError(f"EXTERNAL_API_ALLOWED_PORTS: {part!r} is outside 1-65535")
        ranges.append((first, last))
    if not ranges:
        raise ConfigError("EXTERNAL_API_ALLOWED_PORTS lists no port")
    return tuple(ranges)


def settings_from_config(config: Config) -> ExternalApiSettings:
    try:
        policy = EgressPolicy(
            allowed_hosts=tuple(config.EXTERNAL_API_ALLOWED_HOSTS),
            allow_private_networks=tuple(config.EXTERNAL_API_ALLOW_PRIVATE_NETWORKS),
            allowed_ports=parse_port_ranges(config.EXTERNAL_API_ALLOWED_PORTS),
        )
    except ValueError as error:
        raise ConfigError(f"EXTERNAL_API_ALLOW_PRIVATE_NETWORKS: {error}") from None
    return ExternalApiSettings(
        timeout=config.EXTERNAL_API_TIMEOUT,
        max_retries=config.EXTERNAL_API_MAX_RETRIES,
        backoff_base=config.EXTERNAL_API_BACKOFF_BASE,
        backoff_cap=config.EXTERNAL_API_BACKOFF_CAP,
        max_response_bytes=config.EXTERNAL_API_MAX_RESPONSE_BYTES,
        max_redirects=config.EXTERNAL_API_MAX_REDIRECTS,
        policy=policy,
        user_agent=f"multi-llm-api/{__version__}",
        verify=config.EXTERNAL_API_CA_BUNDLE or True,
    )


class ExternalProxy:
    """Settings plus a client built lazily in each process: a client made before a fork would share sockets."""

    def __init__(self, settings: ExternalApiSettings) -> None:
        self.settings = settings
        self._client: httpx.Client | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> httpx.Client:
        if self._client is None or self._pid != os.getpid():
            with self._lock:
                if self._client is None or self._pid != os.getpid():
                    from app.services.external_api_service import build_client

                    self._client = build_client(self.settings)
                    self._pid = os.getpid()
        return self._client

    def call(self, method: str, url: str, **options: Any) -> Any:
        """`call_external` with this process's client and the settings (its options and errors)."""
        from app.services.external_api_service import call_external

        return call_external(self.client, self.settings, method, url, **options)


def record_call(writer: RowWriter, user_id: int, api_key_id: int | None, audit: ExternalCallAudit) -> None:
    """Queue one audit row per call, written off the request path (through Redis when it is set)."""
    writer.add(
        dict(
            user_id=user_id,
            api_key_id=api_key_id,
            method=audit.method,
            scheme=audit.scheme,
            host=audit.host[:255],
            path=audit.path[:2048],
            status_code=audit.status_code,
            outcome=audit.outcome,
            attempts=audit.attempts,
            bytes_received=audit.bytes_received,
            elapsed_ms=audit.elapsed_ms,
            created_at=utcnow(),
        )
    )


def history(writer: RowWriter, user_id: int, page: int, per_page: int) -> dict[str, Any]:
    writer.flush()  # a caller reads its own calls, even those made a moment ago in this process
    # By time: rows that came through the Redis stream are numbered in batches, not in the order of the calls.
    query = (
        db.select(ExternalCall)
        .where(ExternalCall.user_id == user_id)
        .order_by(ExternalCall.created_at.desc(), ExternalCall.id.desc())
    )
    found = db.paginate(query, page=page, per_page=per_page, error_out=False)
    return {
        "items": [call.to_public() for call in found.items],
        "page": page,
        "per_page": per_page,
        "total": found.total,
        "pages": found.pages,
    }
