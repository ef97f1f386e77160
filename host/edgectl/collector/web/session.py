"""Who may see the fleet pages: a person logged in with the admin token, or a request
carrying the admin token itself (``curl -H 'Authorization: Bearer …'``).

A session lives on the server: a random session id whose SHA-256 is a row of the store
(``store/sessions.py``) with its expiry (``Settings.session_max_age_s``, ``edgectl serve
--session-hours``). The browser holds the id in Starlette's ``SessionMiddleware`` cookie
(signed with itsdangerous, key in ``DATA_DIR/session.key``): ``HttpOnly``,
``SameSite=Strict``, ``Secure`` under TLS. Logging out deletes the row, and
``edgectl serve rotate-admin-token`` deletes every row, so a copied cookie opens nothing
afterwards. The cookie also holds a fingerprint of the admin token's hash (a session
outlives no admin token) and the session's CSRF token, which every form posts back
(checked in constant time), on top of ``SameSite=Strict``. Device tokens are refused
here: a board has no business on the fleet pages.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Form, HTTPException, Request

from edgectl.collector.api.deps import SettingsDep, StoreDep
from edgectl.collector.auth import bearer_token, hash_token, tokens_match
from edgectl.collector.settings import Settings
from edgectl.collector.store import Store

SESSION_COOKIE = "edgectl_session"


class LoginRequired(Exception):
    """No valid session: the page answers with a redirect to the login form."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def admin_fingerprint(admin_token_hash: str) -> str:
    """What a session remembers of the admin token: a digest of its hash, so a changed
    admin token invalidates the session without the cookie carrying anything secret."""
    return hashlib.sha256(b"edgectl-session:" + admin_token_hash.encode()).hexdigest()[:32]


def csrf_token(request: Request) -> str:
    """This session's CSRF token (made on first use)."""
    token = request.session.get("csrf")
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def same_csrf(sent: str, want: object) -> bool:
    """Whether a form's CSRF token is the session's, in constant time (as bytes: a form
    may send any characters, and ``compare_digest`` refuses non-ASCII strings)."""
    return isinstance(want, str) and bool(sent) and hmac.compare_digest(
        sent.encode("utf-8", "surrogatepass"), want.encode("utf-8", "surrogatepass"))


def start_session(request: Request, store: Store, settings: Settings) -> None:
    """Log in: a fresh session (new id, new CSRF token) stored on the server, bound to the
    current admin token."""
    sid = secrets.token_urlsafe(32)
    store.add_session(hash_token(sid), "admin", settings.session_max_age_s)
    request.session.clear()
    request.session["sid"] = sid
    request.session["admin"] = admin_fingerprint(settings.admin_token_hash)
    csrf_token(request)


def end_session(request: Request, store: Store) -> None:
    """Log out: the session's row goes (a copy of the cookie opens nothing), then the
    cookie."""
    sid = request.session.get("sid")
    if isinstance(sid, str):
        store.end_session(hash_token(sid))
    request.session.clear()


def viewer(request: Request, store: StoreDep, settings: SettingsDep) -> str:
    """``"admin"`` when the caller may see the pages; else a redirect to the login page
    (no session), 401 (a bad bearer token) or 403 (a device token)."""
    token = bearer_token(request.headers.get("authorization"))
    if token is not None:
        if tokens_match(token, settings.admin_token_hash):
            return "admin"
        if store.device_for_token_hash(hash_token(token)) is not None:
            raise HTTPException(403, "device tokens cannot open the fleet pages")
        raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})
    fingerprint, sid = request.session.get("admin"), request.session.get("sid")
    if isinstance(fingerprint, str) and isinstance(sid, str) and hmac.compare_digest(
            fingerprint, admin_fingerprint(settings.admin_token_hash)) and \
            store.session_who(hash_token(sid)) == "admin":
        return "admin"
    request.session.clear()
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    raise LoginRequired(path)


Viewer = Annotated[str, Depends(viewer)]


def checked_form(request: Request, who: Viewer,
                 csrf: Annotated[str, Form()] = "") -> str:
    """A form post by ``who``: the CSRF token must match the session's (a bearer-token
    request has no ambient credentials to forge and needs none)."""
    if bearer_token(request.headers.get("authorization")) is not None:
        return who
    want = request.session.get("csrf")
    if not same_csrf(csrf, want):
        raise HTTPException(403, "the form's CSRF token is missing or wrong: reload the page")
    return who


FormViewer = Annotated[str, Depends(checked_form)]


def login_url(next_path: str) -> str:
    return "/login?next=" + quote(next_path, safe="")


def safe_next(next_path: str | None) -> str:
    """Where to go after logging in: a local path only (no open redirect)."""
    if not next_path or not next_path.startswith("/") or next_path.startswith("//") \
            or "\\" in next_path:
        return "/"
    return next_path
