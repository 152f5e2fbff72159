"""The external proxy's settings and audit record: what the app builds at start-up and what the audit row
keeps. Apart from app/services/external_api_service.py, so that defining them does not load httpx: the
HTTP client stack (~2.5 MB per worker) is loaded when the first external call is made."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

from app.utils.egress_guard import EgressPolicy


@dataclass(frozen=True)
class ExternalApiSettings:
    """Everything call_external needs from configuration; built once by the app from its config."""

    timeout: float = 30.0
    max_retries: int = 2
    backoff_base: float = 0.5
    backoff_cap: float = 8.0
    max_response_bytes: int = 10 * 1024 * 1024
    max_redirects: int = 5
    # Optional cap on how long one attempt may wait for the response headers, so a stalled GET is retried
    # within the deadline; None lets one attempt use all the time left.
    attempt_timeout: float | None = None
    policy: EgressPolicy = field(default_factory=EgressPolicy)
    user_agent: str = "multi-llm-api/0.1"
    verify: bool | str | ssl.SSLContext = True


@dataclass(frozen=True)
class ExternalCallAudit:
    """What the audit row records about one call, successful or not."""

    method: str
    scheme: str
    host: str
    path: str
    outcome: str
    status_code: int | None
    attempts: int
    elapsed_ms: int
    bytes_received: int
