"""The device side of the host collector's HTTP API: one device, one token (``requests``).

Used by both ``edge_agent.sync`` (decisions, samples, heartbeats) and ``edge_agent.update``
(desired version, bundle download), so neither imports the other for it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import requests

from edge_common.errors import BundleError, ConfigError
from edge_common.manifest import MAX_BUNDLE_BYTES

log = logging.getLogger(__name__)

API = "/api/v1"


# A bundle tar is at most MAX_BUNDLE_BYTES of files plus tar headers.
MAX_DOWNLOAD_BYTES = MAX_BUNDLE_BYTES + 1024**2
_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_desired(body: Any) -> dict[str, Any]:
    """The host's ``/desired`` answer, refused (``HostUnavailable``, one line) unless it is
    an object with ``version`` null or a short string, ``sha256`` null, empty or 64 hex
    digits and ``allow_downgrade`` a boolean (absent: false)."""
    if not isinstance(body, dict):
        raise HostUnavailable(f"GET /desired: expected an object, got {type(body).__name__}")
    version, sha = body.get("version"), body.get("sha256")
    if version is not None and not (isinstance(version, str) and 0 < len(version) <= 256):
        raise HostUnavailable(f"GET /desired: version must be a string, got {version!r:.60}")
    if sha not in (None, "") and not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
        raise HostUnavailable(f"GET /desired: sha256 must be 64 hex digits, got {sha!r:.80}")
    allow = body.get("allow_downgrade", False)
    if not isinstance(allow, bool):
        raise HostUnavailable(f"GET /desired: allow_downgrade must be true or false, "
                              f"got {allow!r:.40}")
    return {**body, "allow_downgrade": allow}


def is_success(status: int) -> bool:
    return 200 <= status < 300


class HostUnavailable(Exception):
    """The collector could not be reached or answered with an error; retry later."""

    def __init__(self, msg: str, status: int | None = None) -> None:
        super().__init__(msg)
        self.status = status


def read_token(token: str | None, token_file: str | None) -> str:
    """The device token from the config (``host.token`` or ``host.token_file``)."""
    if token:
        return token
    if token_file:
        try:
            value = Path(token_file).read_text().strip()
        except OSError as err:
            raise ConfigError(f"config: host.token_file: cannot read {token_file}: {err}") from err
        if value:
            return value
        raise ConfigError(f"config: host.token_file: {token_file} is empty")
    raise ConfigError("config: host: set token or token_file to sync with the collector")


class HostClient:
    """The device side of the collector API (``requests``), one device, one token."""

    def __init__(
        self,
        url: str,
        device_id: str,
        token: str,
        ca_cert: str | None = None,
        verify: bool = True,
        timeout_s: float = 10.0,
    ) -> None:
        self.base = f"{url.rstrip('/')}{API}/devices/{device_id}"
        self.device_id = device_id
        self.timeout = timeout_s
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        # Passed on every request: a session-level ``verify`` loses to REQUESTS_CA_BUNDLE.
        self.verify: bool | str = ca_cert if (ca_cert and verify) else verify

    @classmethod
    def from_config(cls, config: Any) -> HostClient:
        """From an ``AgentConfig`` (its ``host`` section and ``device_id``)."""
        host = config.host
        if not host.url:
            raise ConfigError("config: host.url: not set")
        return cls(
            host.url,
            config.device_id,
            read_token(host.token, host.token_file),
            ca_cert=host.ca_cert,
            verify=host.verify,
            timeout_s=host.timeout_s,
        )

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        """One call; ``HostUnavailable`` on a network error or a non-2xx answer."""
        try:
            resp = self.session.request(method, self.base + path, timeout=self.timeout,
                                        verify=self.verify, **kw)
        except requests.RequestException as err:
            raise HostUnavailable(f"{method} {path}: {type(err).__name__}: {err}") from err
        if not is_success(resp.status_code):
            raise HostUnavailable(
                f"{method} {path}: HTTP {resp.status_code}: {resp.text[:200]}", resp.status_code
            )
        return resp

    def post_decisions(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return self.request(
            "POST",
            "/decisions",
            json={
                "device_id": self.device_id,
                "records": records,
            },
        ).json()

    def put_sample(self, sample_id: str, data: bytes, content_type: str) -> dict[str, Any]:
        return self.request(
            "PUT",
            f"/samples/{sample_id}",
            data=data,
            headers={"Content-Type": content_type},
        ).json()

    def heartbeat(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", "/heartbeat", json=body).json()

    def desired(self) -> dict[str, Any]:
        """The model this device should run: ``{version, sha256, allow_downgrade}`` checked
        for shape (a host answering anything else is treated as unavailable, one line)."""
        resp = self.request("GET", "/desired")
        try:
            body = resp.json()
        except ValueError as err:  # requests' JSONDecodeError is a ValueError
            raise HostUnavailable(f"GET /desired: not JSON: {err}") from err
        return check_desired(body)

    def download_bundle(self, dest: Path, chunk: int = 1 << 16,
                        max_bytes: int = MAX_DOWNLOAD_BYTES) -> tuple[str, str]:
        """Stream the desired bundle into ``dest``; return ``(version, sha256 header)``.
        More than ``max_bytes`` is refused (``BundleError``): a host cannot fill the disk."""
        try:
            resp = self.session.get(self.base + "/bundle", timeout=self.timeout, stream=True,
                                    verify=self.verify)
        except requests.RequestException as err:
            raise HostUnavailable(f"GET /bundle: {err}") from err
        with resp:
            if not is_success(resp.status_code):
                raise HostUnavailable(f"GET /bundle: HTTP {resp.status_code}", resp.status_code)
            written = 0
            try:
                with open(dest, "wb") as fh:
                    for part in resp.iter_content(chunk):
                        written += len(part)
                        if written > max_bytes:
                            raise BundleError(f"GET /bundle: over {max_bytes} bytes, refused")
                        fh.write(part)
            except requests.RequestException as err:
                raise HostUnavailable(f"GET /bundle: {err}") from err
            return resp.headers.get("X-Bundle-Version", ""), resp.headers.get("X-Bundle-SHA256", "")

    def report_update(self, report: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", "/updates", json=report).json()
