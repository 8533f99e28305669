"""The worker's web pages: metrics, the segment snapshot in use, health and readiness."""

from __future__ import annotations

from typing import Any

import faust
import orjson
from aiohttp import web as aiohttp_web

from streams import metrics
from streams.faust_internals import recovery_completed
from streams.segmentation import SnapshotFollower, snapshot_summary


def add_pages(app: faust.App, follower: SnapshotFollower) -> None:
    """Serve /metrics, /segments, /healthz and /readyz on the worker's web server."""

    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        return aiohttp_web.Response(
            body=metrics.exposition(), content_type="text/plain", charset="utf-8"
        )

    @app.page("/segments")
    async def segments(web: Any, request: Any) -> Any:
        """The snapshot in use; with ?vector=x1,x2,... also the segment it assigns."""
        snapshot = follower.current
        if snapshot is None:
            return web.json({"version": 0, "warming_up": True})
        body: dict[str, Any] = orjson.loads(snapshot_summary(snapshot))
        vector = request.query.get("vector")
        if vector:
            body["assigned"] = snapshot.assign([float(x) for x in vector.split(",")])
        return web.json(body)

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        ready = app.rebalancing is False and recovery_completed(app)
        return web.json({"ready": ready}, status=200 if ready else 503)
