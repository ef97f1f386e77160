"""Tokens: one per device, one admin token for the CLI; the host keeps only hashes.

Tokens are 256-bit random strings (``secrets.token_urlsafe(32)``), so a plain SHA-256 is
enough to store them (no password stretching needed: they cannot be guessed). They travel
as ``Authorization: Bearer <token>``; comparisons use ``hmac.compare_digest``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

ADMIN_TOKEN_FILE = "admin.token"
METRICS_TOKEN_FILE = "metrics.token"  # read-only: a Prometheus scraper's credentials file
SESSION_KEY_FILE = "session.key"  # signs the fleet pages' session cookies


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_match(token: str, token_hash: str) -> bool:
    return hmac.compare_digest(hash_token(token), token_hash)


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value:
        return None
    return value


def ensure_token_file(path: str | Path) -> Path:
    """Create the random token file ``path`` (mode 0600) if it does not exist; return it
    (the admin token, the metrics token, the session key).

    Written whole to a temp file and hard-linked into place: of several processes
    starting at once (collector workers) one creates it, and none reads it half-written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return path
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(new_token() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        os.unlink(tmp)
    return path


def read_token_file(path: str | Path) -> str:
    """A token file's content, stripped; ``OSError``/``ValueError`` if unusable."""
    token = Path(path).read_text().strip()
    if not token:
        raise ValueError(f"token file {path} is empty")
    return token


def replace_token_file(path: str | Path) -> str:
    """Write a new random token to ``path`` (0600, whole: temp file, fsync, rename over
    the old one) and return it: the admin token's rotation."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = new_token()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return token


class TokenFile:
    """The hash of the token in a file, read again whenever the file changes (its inode,
    size or mtime): a running collector, every worker of it, honours a rotated admin
    token at its next request. A file that is gone or unreadable matches no token (fail
    closed)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._key: tuple[int, int, int] | None = None
        self._hash = ""
        self._lock = threading.Lock()

    def hash(self) -> str:
        try:
            st = os.stat(self.path)
        except OSError:
            return ""
        key: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key == self._key:
            return self._hash
        with self._lock:
            try:
                self._hash = hash_token(read_token_file(self.path))
            except (OSError, ValueError):
                self._hash, key = "", None
            self._key = key
            return self._hash


@dataclass(frozen=True)
class Principal:
    """Who is calling: the admin, or one device."""

    admin: bool
    device: str | None = None
