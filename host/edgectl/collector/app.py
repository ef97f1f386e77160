"""The collector's HTTP app (FastAPI): ``create_app(store, settings)``.

Devices (each with its own bearer token) post heartbeats, decision batches, samples and
update outcomes under ``/api/v1/devices/{device}/...`` and may write only their own
records; they read the model they should run and download its bundle. The admin token
(the ``edgectl fleet`` CLI) registers devices and bundles, sets desired versions and
reads fleet status. The routes live in ``edgectl.collector.api``, one router per
resource. OpenAPI (``/openapi.json``, ``/docs``, ``/redoc``) only with
``Settings.api_docs`` (``edgectl serve --api-docs``). ``/metrics`` (``metrics``) serves
Prometheus; everything else is the fleet pages (``edgectl.collector.web``), mounted last.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from edgectl.collector import metrics
from edgectl.collector.api import (
    API,
    bundles,
    decisions,
    desired,
    devices,
    fleet,
    health,
    heartbeats,
    samples,
    updates,
)
from edgectl.collector.api.errors import http_error, validation_error
from edgectl.collector.api.limits import BodyLimit
from edgectl.collector.settings import DIR_MODE, Settings
from edgectl.collector.store import Store
from edgectl.collector.web import create_web_app
from edgectl.collector.web.app import web_route_templates

ROUTERS = (health, heartbeats, decisions, samples, desired, bundles, updates, devices, fleet)


def route_templates() -> set[str]:
    """Every route template the collector answers with: the API's, /metrics, the pages'
    (the label values of its request metrics, ``metrics.max_request_series``)."""
    out = {API + r.path for m in ROUTERS for r in m.router.routes if hasattr(r, "path")}
    out |= {r.path for r in metrics.router.routes if hasattr(r, "path")}
    return out | web_route_templates()


def create_app(store: Store, settings: Settings) -> FastAPI:
    """The collector app over ``store``; files (samples, bundles) under ``settings.data_dir``."""
    docs = settings.api_docs  # off by default: no unauthenticated map of the API
    app = FastAPI(title="edgectl collector", version="1",
                  description="Boards sync decisions, samples and heartbeats; pull their model.",
                  docs_url="/docs" if docs else None, redoc_url="/redoc" if docs else None,
                  openapi_url="/openapi.json" if docs else None)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_middleware(BodyLimit, limit=settings.max_json_bytes,
                       exempt_suffixes=(f"{API}/bundles",))
    app.add_middleware(metrics.RequestMetrics, templates=route_templates())  # outermost
    settings.samples_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    settings.bundles_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    app.state.store = store
    app.state.settings = settings
    app.state.metrics_registry = metrics.registry_for(store, settings.stale_after_s)
    for module in ROUTERS:
        app.include_router(module.router, prefix=API)
    app.include_router(metrics.router)
    app.mount("/", create_web_app(store, settings))  # last: it answers every other path
    build_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        doc = build_openapi()
        doc.setdefault("components", {}).setdefault("schemas", {}).update(
            decisions.BODY_COMPONENTS)
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
    return app
