"""The admin side of the collector API over HTTP (``requests``), used by ``edgectl fleet``.

The fleet commands talk to a running collector with the admin token rather than opening
its SQLite file: the collector may run on another machine, and one writer owning the
database keeps its invariants in one place.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import requests

from edge_common.bundle import pack_tar
from edge_common.errors import EdgeError


class CollectorError(EdgeError, RuntimeError):
    """The collector refused a request or could not be reached."""


class AdminClient:
    """Admin calls on the collector at ``url`` with ``token``."""

    def __init__(self, url: str, token: str, ca_cert: str | Path | None = None,
                 timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout_s
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        # Passed on every request: a session-level ``verify`` loses to REQUESTS_CA_BUNDLE.
        self.verify: bool | str = str(ca_cert) if ca_cert else True

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            resp = self.session.request(method, f"{self.url}/api/v1{path}",
                                        timeout=self.timeout, verify=self.verify, **kw)
        except requests.RequestException as err:
            raise CollectorError(f"cannot reach the collector at {self.url}: {err}") from err
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail")
            except ValueError:
                detail = resp.text[:200]
            raise CollectorError(f"collector refused {method} {path}: "
                                 f"HTTP {resp.status_code}: {detail}")
        return resp.json()

    def add_device(self, name: str, group: str | None = None) -> dict[str, Any]:
        return self._call("POST", "/devices", json={"name": name, "group": group})

    def rotate_token(self, name: str) -> dict[str, Any]:
        return self._call("POST", f"/devices/{name}/token")

    def devices(self) -> list[dict[str, Any]]:
        return self._call("GET", "/devices")

    def status(self) -> list[dict[str, Any]]:
        return self._call("GET", "/fleet/status")

    def decisions(self, device: str, after_seq: int = -1,
                  limit: int = 1000) -> list[dict[str, Any]]:
        return self._call("GET", f"/devices/{device}/decisions",
                          params={"after_seq": after_seq, "limit": limit})

    def updates(self, device: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/devices/{device}/updates")

    def upload_bundle(self, path: str | Path) -> dict[str, Any]:
        """Upload a bundle ``.tar`` or directory (packed to a temp ``.tar`` first)."""
        path = Path(path)
        if path.is_dir():
            with tempfile.TemporaryDirectory() as tmp:
                tar = pack_tar(path, Path(tmp) / "bundle.tar")
                return self.upload_bundle(tar)
        with open(path, "rb") as fh:
            return self._call("POST", "/bundles", data=fh,
                              headers={"Content-Type": "application/x-tar"})

    def set_desired(self, kind: str, target: str, version: str,
                    allow_downgrade: bool = False) -> dict[str, Any]:
        return self._call("PUT", f"/desired/{kind}/{target}",
                          json={"version": version, "allow_downgrade": allow_downgrade})

    def review_labels_zip(self) -> bytes:
        """Every labelled review sample as a zip in the ``folder:DIR`` layout (the review
        page's export, ``GET /review/export.zip``)."""
        try:
            resp = self.session.get(f"{self.url}/review/export.zip", timeout=self.timeout,
                                    verify=self.verify, allow_redirects=False)
        except requests.RequestException as err:
            raise CollectorError(f"cannot reach the collector at {self.url}: {err}") from err
        if resp.status_code != 200:
            raise CollectorError(f"collector refused the label export: HTTP "
                                 f"{resp.status_code}: {resp.text[:200]}")
        return resp.content
