"""A hostile update host on 127.0.0.1: answers ``/desired`` with whatever a test sets and
serves whatever bytes it is given as ``/bundle``, recording every update report.

The real collector (edgectl.collector) never lies about versions; this one does, so the
update worker's checks can be tried against a host that is compromised or wrong."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from edge_common.hashing import sha256_file


class FakeHost:
    def __init__(self) -> None:
        self.desired: Any = {"version": None}
        self.body: bytes = b""
        self.headers: dict[str, str] = {}
        self.raw_desired: bytes | None = None  # sent as-is instead of ``desired``
        self.reports: list[dict[str, Any]] = []
        self.downloads = 0
        host = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None,
                      ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path.endswith("/desired"):
                    raw = host.raw_desired
                    self._send(200, raw if raw is not None else json.dumps(host.desired).encode())
                elif self.path.endswith("/bundle"):
                    host.downloads += 1
                    self._send(200, host.body, host.headers, "application/x-tar")
                else:
                    self._send(404, b"{}")

            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                if self.path.endswith("/updates"):
                    host.reports.append(body)
                self._send(200, b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def serve(self, tar: Path, claim: str, allow_downgrade: bool = False,
              header_version: str | None = None) -> None:
        """Claim ``claim`` as the desired version and serve ``tar`` (its true sha256)."""
        sha = sha256_file(tar)
        self.desired = {"version": claim, "sha256": sha, "allow_downgrade": allow_downgrade}
        self.body = tar.read_bytes()
        self.headers = {"X-Bundle-SHA256": sha, "X-Bundle-Version": header_version or claim}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
