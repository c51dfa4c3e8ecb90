"""``GET /metrics``: Prometheus text format, behind the API key (scope ``read``) or the metrics key.

``HOPFLOW_METRICS_KEY`` lets a scraper read metrics and nothing else. The first scrape switches
collection on when ``HOPFLOW_METRICS`` did not already (prometheus-client is imported then, never on
a webhook call). docs/operations.md ("Metrics") lists what is counted.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from engine.web.auth import authorize

if TYPE_CHECKING:  # pragma: no cover - typing only
    from starlette.requests import Request
    from starlette.responses import Response

    from engine.web.core import HopflowApp


def _metrics_key(hop: HopflowApp, request: Request) -> bool:
    key = hop.config.metrics_key
    if not key:
        return False
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())


async def serve(hop: HopflowApp, request: Request) -> Response:
    from starlette.responses import Response

    from engine.observe.metrics import enable

    if not _metrics_key(hop, request):
        authorize(hop.config, request, scope="read")
    runtime = await hop.runtime_async()
    body, content_type = await hop.call(lambda: enable(runtime).render())
    return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})
