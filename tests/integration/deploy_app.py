"""A sync service set up the way the environment says, for deployment tests in subprocesses.

``DEPLOY_SETUP`` lists syncperf set-up calls made at import, in order (comma-separated):
``otlp`` (``setup_otlp()``), ``prometheus`` (``setup_prometheus(port=DEPLOY_PROMETHEUS_PORT)``),
``configure`` (``syncperf.configure(max_entities=50)``), ``configure-prometheus``
(``syncperf.configure(prometheus=CollectorRegistry())``). Empty: no syncperf call at all (the
zero-code case). ``DEPLOY_METRICS_ROUTE=1`` mounts ``prometheus_asgi_app()`` at ``/metrics``.
``GET /debug/outputs`` tells what this worker feeds.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

import syncperf
import syncperf.export
from syncperf import _runtime
from syncperf.asgi import SyncPerfMiddleware

for step in filter(None, os.environ.get("DEPLOY_SETUP", "").split(",")):
    if step == "otlp":
        syncperf.export.setup_otlp()
    elif step == "prometheus":
        syncperf.export.setup_prometheus(port=int(os.environ["DEPLOY_PROMETHEUS_PORT"]))
    elif step == "configure":
        syncperf.configure(max_entities=50)
    elif step == "configure-prometheus":
        syncperf.configure(prometheus=CollectorRegistry())
    else:
        raise ValueError(f"unknown DEPLOY_SETUP step {step!r}")

app = FastAPI()


@app.post("/sync/{entity}/push")
async def push(entity: str, body: dict[str, Any], slow: float = 0.0) -> dict[str, int]:
    syncperf.current_operation().set_batch_size(len(body.get("changes", [])))
    await asyncio.sleep(slow)  # ?slow=seconds: a push that stays in flight
    return {"pid": os.getpid()}


@app.get("/debug/outputs")
async def outputs() -> dict[str, int]:
    rt = _runtime.current()
    return {"pid": os.getpid(), "exporters": len(rt.exporters), "prometheus": len(rt.prometheus)}


if os.environ.get("DEPLOY_METRICS_ROUTE") == "1":
    app.mount("/metrics", syncperf.export.prometheus_asgi_app())
app.add_middleware(SyncPerfMiddleware, routes={"/sync/{entity}/push": "push"})
