"""The fleet pages as one app: ``create_web_app(store, settings)``, mounted at ``/`` by
the collector's ``create_app`` after the API routes, so the session cookie, CSRF checks
and page headers never touch the boards' API path."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.middleware.sessions import SessionMiddleware

from edgectl.collector.api.errors import http_error, validation_error
from edgectl.collector.settings import Settings
from edgectl.collector.store import Store
from edgectl.collector.web import pages, review
from edgectl.collector.web.render import HERE
from edgectl.collector.web.session import (
    SESSION_COOKIE,
    LoginRequired,
    login_url,
)


def create_web_app(store: Store, settings: Settings) -> FastAPI:
    """The pages as an app of their own (mounted at ``/`` by ``create_app``)."""
    web = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    web.state.store = store
    web.state.settings = settings
    web.add_middleware(SessionMiddleware, secret_key=settings.session_key,
                       session_cookie=SESSION_COOKIE, max_age=int(settings.session_max_age_s),
                       same_site="strict", https_only=settings.https)

    web.add_exception_handler(RequestValidationError, validation_error)
    web.add_exception_handler(HTTPException, http_error)

    @web.exception_handler(LoginRequired)
    async def _to_login(request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse(login_url(exc.next_path), status_code=303)

    web.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    web.include_router(pages.router)
    web.include_router(review.router)
    return web


def web_route_templates() -> set[str]:
    """The pages' route templates, and ``/static`` (every file under it)."""
    return {r.path for m in (pages, review) for r in m.router.routes if hasattr(r, "path")} | \
        {"/static"}
