"""Body-size guards: the JSON body limit (ASGI middleware) and a limited stream reader
for raw uploads (samples)."""

from __future__ import annotations

from fastapi import HTTPException, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    """Refuse JSON bodies over ``limit`` bytes (413), by Content-Length or while streaming.

    Sample and bundle uploads stream their own bodies with their own limits.
    """

    def __init__(self, app: ASGIApp, limit: int, exempt_suffixes: tuple[str, ...]) -> None:
        self.app, self.limit, self.exempt = app, limit, exempt_suffixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _exempt(scope["path"], scope["method"], self.exempt):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await _send_json(send, 413, b'{"detail":"request body too large"}')
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            seen += len(msg.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, "request body too large")
            return msg

        await self.app(scope, limited, send)


def _exempt(path: str, method: str, suffixes: tuple[str, ...]) -> bool:
    if method == "PUT" and "/samples/" in path:
        return True
    return method == "POST" and path.rstrip("/").endswith(suffixes)


async def _send_json(send: Send, code: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": code,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def read_limited(request: Request, limit: int, what: str) -> bytes:
    """The whole request body, 413 past ``limit`` bytes (declared or streamed), 400 if empty."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"{what} larger than {limit} bytes")
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise HTTPException(413, f"{what} larger than {limit} bytes")
    if not buf:
        raise HTTPException(400, f"empty {what}")
    return bytes(buf)
