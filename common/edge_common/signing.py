"""Ed25519 keys and the manifest signature (``manifest.sig``: base64 over the exact bytes of
``manifest.json``), with ``cryptography``."""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import Any

from edge_common.errors import BundleError, IntegrityError
from edge_common.fileio import write_bytes_atomic
from edge_common.manifest import MANIFEST, SIGNATURE

KeyLike = bytes | str | os.PathLike[str]


def _read_key_bytes(key: KeyLike, what: str) -> bytes:
    if isinstance(key, bytes):
        data = key
    elif isinstance(key, str) and key.lstrip().startswith("-----BEGIN"):
        data = key.encode()
    else:
        p = Path(key)
        try:
            data = p.read_bytes()
        except OSError as err:
            raise BundleError(f"cannot read {what} {p}: {err.strerror or err}") from err
    return data


def generate_keypair() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair as ``(private PEM (PKCS#8), public PEM)``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def load_private_key(key: KeyLike) -> Any:
    """An Ed25519 private key from PEM bytes/str or a path."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        k = serialization.load_pem_private_key(_read_key_bytes(key, "private key"), password=None)
    except (ValueError, TypeError) as err:
        raise BundleError(f"not a usable PEM private key: {err}") from err
    if not isinstance(k, Ed25519PrivateKey):
        raise BundleError("signing key is not an Ed25519 private key")
    return k


def load_public_key(key: KeyLike) -> Any:
    """An Ed25519 public key from PEM bytes/str or a path."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        k = serialization.load_pem_public_key(_read_key_bytes(key, "public key"))
    except (ValueError, TypeError) as err:
        raise BundleError(f"not a usable PEM public key: {err}") from err
    if not isinstance(k, Ed25519PublicKey):
        raise BundleError("public key is not an Ed25519 key")
    return k


def sign_manifest(bundle_dir: str | os.PathLike[str], private_key_pem: KeyLike) -> Path:
    """Write ``manifest.sig``: base64 Ed25519 signature of the bytes of ``manifest.json``."""
    root = Path(bundle_dir)
    key = load_private_key(private_key_pem)
    try:
        data = (root / MANIFEST).read_bytes()
    except OSError as err:
        raise BundleError(f"cannot sign {root}: missing file {MANIFEST}") from err
    sig = base64.b64encode(key.sign(data)) + b"\n"
    write_bytes_atomic(root / SIGNATURE, sig)
    return root / SIGNATURE


def verify_signature(manifest_bytes: bytes, sig_text: bytes, public_key: KeyLike) -> None:
    """Raise IntegrityError unless ``sig_text`` (base64) signs ``manifest_bytes``."""
    from cryptography.exceptions import InvalidSignature

    key = load_public_key(public_key)
    try:
        sig = base64.b64decode(sig_text.strip(), validate=True)
    except (binascii.Error, ValueError) as err:
        raise IntegrityError(f"{SIGNATURE} is not valid base64") from err
    try:
        key.verify(sig, manifest_bytes)
    except InvalidSignature as err:
        raise IntegrityError("signature does not match manifest") from err


