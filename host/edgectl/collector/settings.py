"""Collector settings: where data lives and the limits every request is held to."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgectl.collector.auth import (
    ADMIN_TOKEN_FILE,
    METRICS_TOKEN_FILE,
    SESSION_KEY_FILE,
    TokenFile,
    ensure_token_file,
    hash_token,
    read_token_file,
)

DEFAULT_PORT = 8750
MiB = 1024 * 1024
FILE_MODE = 0o640  # samples, the database: the collector's user and group only
DIR_MODE = 0o750
DEFAULT_SESSION_HOURS = 8.0  # one shift


def default_data_dir() -> Path:
    """``$EDGECTL_DATA_DIR``, else ``$XDG_DATA_HOME/edgectl/collector`` (~/.local/share/...)."""
    env = os.environ.get("EDGECTL_DATA_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "edgectl" / "collector"


@dataclass(frozen=True)
class Settings:
    """Everything ``create_app`` needs besides the store."""

    data_dir: Path
    admin_token: TokenFile  # read again when the file changes (rotate-admin-token)
    max_sample_bytes: int = 4 * MiB
    max_sample_pixels: int = 25_000_000
    max_json_bytes: int = 4 * MiB
    max_batch_records: int = 1000
    max_bundle_bytes: int = 1024 * MiB
    stale_after_s: float = 120.0
    api_docs: bool = False  # serve /docs, /redoc, /openapi.json (off: they map the API)
    metrics_token_hash: str = ""  # may read /metrics only (Prometheus); "" = admin only
    session_key: str = ""  # signs page sessions; "" = no fleet pages
    https: bool = False  # served over TLS: session cookies are marked Secure
    session_max_age_s: float = DEFAULT_SESSION_HOURS * 3600.0  # a page session's lifetime

    @property
    def admin_token_hash(self) -> str:
        """The admin token's hash as the file holds it now ("" if unreadable)."""
        return self.admin_token.hash()

    @property
    def samples_dir(self) -> Path:
        return self.data_dir / "samples"

    @property
    def bundles_dir(self) -> Path:
        return self.data_dir / "bundles"

    @classmethod
    def for_data_dir(cls, data_dir: str | Path, admin_token_file: str | Path | None = None,
                     **limits: Any) -> Settings:
        """Settings for ``data_dir``; the admin token file (default ``data_dir/admin.token``),
        the metrics token and the page session key (``data_dir/metrics.token``,
        ``data_dir/session.key``) are created, mode 0600, on first use."""
        data_dir = Path(data_dir)
        token_file = Path(admin_token_file) if admin_token_file else data_dir / ADMIN_TOKEN_FILE
        read_token_file(ensure_token_file(token_file))  # exists and is not empty
        metrics = read_token_file(ensure_token_file(data_dir / METRICS_TOKEN_FILE))
        session = read_token_file(ensure_token_file(data_dir / SESSION_KEY_FILE))
        return cls(data_dir=data_dir, admin_token=TokenFile(token_file),
                   metrics_token_hash=hash_token(metrics), session_key=session, **limits)
