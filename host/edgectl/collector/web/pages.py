"""The routes of the fleet pages: login, fleet, device, models, sample images.

Every page needs ``session.viewer`` (a logged-in session or the admin token); every form
post needs ``session.checked_form`` (CSRF). The review queue and its export live in
``review``. Pages are rendered from ``data``; templates only lay out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from edgectl.collector.api.deps import SettingsDep, StoreDep, inside, safe_name
from edgectl.collector.auth import hash_token, tokens_match
from edgectl.collector.web import data
from edgectl.collector.web.render import render
from edgectl.collector.web.session import (
    FormViewer,
    Viewer,
    end_session,
    safe_next,
    same_csrf,
    start_session,
)

router = APIRouter()


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/") -> HTMLResponse:  # noqa: A002 - the query
    return render(request, "login.html", next=safe_next(next), error=None)


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, store: StoreDep, settings: SettingsDep,
          token: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/",  # noqa: A002
          csrf: Annotated[str, Form()] = "") -> Response:
    """Log in with the admin token; a device token or a wrong one gets the form again."""
    if not same_csrf(csrf, request.session.get("csrf")):
        return render(request, "login.html", status_code=403, next=safe_next(next),
                      error="The form expired; try again.")
    token = token.strip()
    if token and tokens_match(token, settings.admin_token_hash):
        start_session(request, store, settings)
        return RedirectResponse(safe_next(next), status_code=303)
    if token and store.device_for_token_hash(hash_token(token)) is not None:
        error, code = "That is a device token: the fleet pages need the admin token.", 403
    else:
        error, code = "Not the admin token.", 401
    return render(request, "login.html", status_code=code, next=safe_next(next), error=error)


@router.post("/logout")
def logout(request: Request, _: FormViewer, store: StoreDep) -> Response:
    """End the session on the server (a copied cookie stops working too)."""
    end_session(request, store)
    return RedirectResponse("/login", status_code=303)


@router.get("/", response_class=HTMLResponse)
def fleet_page(request: Request, _: Viewer, store: StoreDep,
               settings: SettingsDep) -> HTMLResponse:
    return render(request, "fleet.html", page="fleet",
                  fleet=data.fleet(store, settings.stale_after_s))


@router.get("/devices/{name}", response_class=HTMLResponse)
def device_page(request: Request, name: str, _: Viewer, store: StoreDep, settings: SettingsDep,
                hours: Annotated[float, Query(gt=0, le=168)] = 6.0) -> HTMLResponse:
    info = data.device(store, safe_name(name), settings.stale_after_s, hours)
    if info is None:
        raise HTTPException(404, f"no device {name!r}")
    return render(request, "device.html", page="fleet", name=name, d=info)


@router.get("/models", response_class=HTMLResponse)
def models_page(request: Request, _: Viewer, store: StoreDep,
                settings: SettingsDep) -> HTMLResponse:
    return render(request, "models.html", page="models",
                  models=data.models(store, settings.stale_after_s))


@router.get("/samples/{device}/{sample_id}")
def sample_image(device: str, sample_id: str, _: Viewer, store: StoreDep,
                 settings: SettingsDep) -> Response:
    """A kept sample's image file (thumbnails on the device and review pages)."""
    s = store.sample(safe_name(device), safe_name(sample_id, "sample id"))
    if s is None:
        raise HTTPException(404, "no such sample")
    path = inside(settings.data_dir, *Path(s["path"]).parts)
    if not path.is_file():
        raise HTTPException(404, "sample file missing")
    return FileResponse(path, media_type=s["content_type"],
                        headers={"Cache-Control": "private, max-age=3600",
                                 "X-Content-Type-Options": "nosniff"})
