"""Bundles: a good one verifies; any tampering is refused with a message naming what failed."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from onnxkit import LABELS, SIZE, tiny_onnx

from edge_common import bundle as B
from edge_common import bundle_tar
from edge_common.errors import BundleError, IntegrityError
from edge_common.preprocess import InputSpec


def make_bundle(root: Path, key: bytes | None = None) -> Path:
    """A bundle with one real ONNX model and one fake TFLite file (bytes only)."""
    from edge_common.runtime import open_session

    root.mkdir(parents=True)
    tiny_onnx(root / "model.fp32.onnx")
    (root / "model.int8.tflite").write_bytes(b"TFL3" + bytes(range(256)) * 4)
    (root / "model.int8.onnx").write_bytes(b"fake int8 onnx" * 10)
    x = np.random.default_rng(1).normal(size=(4, 3, SIZE, SIZE)).astype(np.float32)
    y = open_session(root / "model.fp32.onnx").run(x)
    np.savez(root / "test_vectors.npz", **{
        "x": x, "expected/model.fp32.onnx": y,
        "expected/model.int8.tflite": np.zeros((4, 3), np.float32),
        "expected/model.int8.onnx": np.zeros((4, 3), np.float32),
    })
    arts = []
    for name, fmt, prec in [("model.fp32.onnx", "onnx", "fp32"),
                            ("model.int8.onnx", "onnx", "int8"),
                            ("model.int8.tflite", "tflite", "int8")]:
        arts.append({"path": name, "format": fmt, "precision": prec,
                     "sha256": B.sha256_file(root / name), "bytes": (root / name).stat().st_size,
                     "metrics": {"accuracy": 0.9}, "tolerance": {"max_abs": 1e-4, "top1": True}})
    manifest = {
        "schema_version": 1, "name": "tiny", "version": "v1", "created": "2026-01-01T00:00:00Z",
        "labels": LABELS, "reject_labels": LABELS[1:],
        "input": InputSpec(size=SIZE).to_dict(), "artifacts": arts,
        "metrics": {"accuracy": 0.9}, "min_accuracy": 0.5,
        "test_vectors": {"path": "test_vectors.npz", "count": 4,
                         "sha256": B.sha256_file(root / "test_vectors.npz"),
                         "bytes": (root / "test_vectors.npz").stat().st_size},
    }
    B.write_manifest(root, manifest)
    if key is not None:
        B.sign_manifest(root, key)
    return root


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return B.generate_keypair()


@pytest.fixture
def signed(tmp_path, keys) -> Path:
    return make_bundle(tmp_path / "bundle", keys[0])


def _edit_manifest(root: Path, fn) -> None:
    """Change the manifest without re-signing (as an attacker would); keep the old sig."""
    sig = (root / B.SIGNATURE).read_bytes()
    m = json.loads((root / B.MANIFEST).read_text())
    fn(m)
    (root / B.MANIFEST).write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")
    (root / B.SIGNATURE).write_bytes(sig)


def test_good_bundle_verifies_with_key(signed, keys):
    b = B.load_bundle(signed, public_key=keys[1])
    assert b.signed and b.name == "tiny" and b.version == "v1"
    assert b.labels == LABELS and b.reject_labels == LABELS[1:]
    assert b.input_spec == InputSpec(size=SIZE)
    paths = [a.path for a in b.artifacts]
    assert paths == ["model.fp32.onnx", "model.int8.onnx", "model.int8.tflite"]
    assert b.deployable is True and b.min_accuracy == 0.5


def test_public_key_as_path_and_str(signed, keys, tmp_path):
    pub = tmp_path / "k.pub"
    pub.write_bytes(keys[1])
    assert B.load_bundle(signed, public_key=pub).signed
    assert B.load_bundle(signed, public_key=keys[1].decode()).signed


@pytest.mark.parametrize("name", ["model.fp32.onnx", "model.int8.onnx", "model.int8.tflite",
                                  "test_vectors.npz"])
@pytest.mark.parametrize("where", [0, -1, "mid"])
def test_any_flipped_byte_is_refused(signed, name, where):
    f = signed / name
    data = bytearray(f.read_bytes())
    i = len(data) // 2 if where == "mid" else where
    data[i] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=rf"bundle tiny@v1: {name} sha256 mismatch"):
        B.load_bundle(signed)


def test_truncated_file_is_a_size_mismatch(signed):
    f = signed / "model.int8.tflite"
    f.write_bytes(f.read_bytes()[:-1])
    with pytest.raises(IntegrityError, match="model.int8.tflite size mismatch"):
        B.load_bundle(signed)


def test_missing_file_is_named(signed):
    (signed / "model.int8.tflite").unlink()
    with pytest.raises(BundleError, match="missing file model.int8.tflite"):
        B.load_bundle(signed)


@pytest.mark.parametrize("field", ["labels", "reject_labels", "input", "artifacts", "name",
                                   "version", "schema_version"])
def test_missing_manifest_field_is_named(signed, field):
    _edit_manifest(signed, lambda m: m.pop(field))
    with pytest.raises(BundleError, match=f"manifest field '{field}' missing"):
        B.load_bundle(signed)


@pytest.mark.parametrize("change", [
    lambda m: m.__setitem__("version", "v2"),
    lambda m: m["labels"].reverse(),
    lambda m: m.__setitem__("reject_labels", []),
    lambda m: m["artifacts"][0].__setitem__("tolerance", {"max_abs": 100.0, "top1": False}),
    lambda m: m.__setitem__("min_accuracy", 0.0),
])
def test_any_manifest_change_breaks_the_signature(signed, keys, change):
    _edit_manifest(signed, change)
    B.load_bundle(signed)  # still self-consistent without a key...
    with pytest.raises(IntegrityError, match="signature does not match manifest"):
        B.load_bundle(signed, public_key=keys[1])  # ...but not what was signed


def test_whitespace_change_breaks_the_signature(signed, keys):
    raw = (signed / B.MANIFEST).read_bytes()
    (signed / B.MANIFEST).write_bytes(raw + b"\n")
    with pytest.raises(IntegrityError, match="signature does not match manifest"):
        B.load_bundle(signed, public_key=keys[1])


def test_wrong_key_and_garbage_signature_refused(signed, keys):
    _, other_pub = B.generate_keypair()
    with pytest.raises(IntegrityError, match="signature does not match manifest"):
        B.load_bundle(signed, public_key=other_pub)
    (signed / B.SIGNATURE).write_text("not base64 !!\n")
    with pytest.raises(IntegrityError, match="not valid base64"):
        B.load_bundle(signed, public_key=keys[1])


def test_unsigned_bundle_refused_when_key_configured(tmp_path, keys):
    root = make_bundle(tmp_path / "b")
    assert not B.load_bundle(root).signed
    with pytest.raises(IntegrityError, match="bundle is not signed but a public key is configured"):
        B.load_bundle(root, public_key=keys[1])


def test_rewriting_manifest_drops_stale_signature(signed):
    m = json.loads((signed / B.MANIFEST).read_text())
    B.write_manifest(signed, m)
    assert not (signed / B.SIGNATURE).exists()


def test_manifest_checks(signed):
    _edit_manifest(signed, lambda m: m.__setitem__("schema_version", 2))
    with pytest.raises(BundleError, match="unsupported schema_version 2"):
        B.load_bundle(signed)
    _edit_manifest(signed, lambda m: (m.__setitem__("schema_version", 1),
                                      m["artifacts"][0].__setitem__("path", "../x.onnx")))
    with pytest.raises(BundleError, match="unsafe path"):
        B.load_bundle(signed)
    _edit_manifest(signed, lambda m: (m["artifacts"][0].__setitem__("path", "model.fp32.onnx"),
                                      m["artifacts"][0].pop("sha256")))
    with pytest.raises(BundleError, match=r"'artifacts\[0\].sha256' missing"):
        B.load_bundle(signed)
    (signed / B.MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        B.load_bundle(signed)


def test_select_artifact(signed):
    b = B.load_bundle(signed)
    assert b.select_artifact("onnx").path == "model.int8.onnx"  # int8 preferred
    assert b.select_artifact("onnx", "fp32").path == "model.fp32.onnx"
    assert b.select_artifact("tflite").precision == "int8"
    with pytest.raises(BundleError, match="no tflite/fp32 artifact"):
        b.select_artifact("tflite", "fp32")
    with pytest.raises(BundleError, match=r"no coreml artifact \(has: onnx/fp32"):
        b.select_artifact("coreml")
    _edit_manifest(signed, lambda m: m.__setitem__("default_precision", "fp32"))
    b = B.load_bundle(signed)
    assert b.select_artifact("onnx").path == "model.fp32.onnx"  # the manifest's default
    assert b.select_artifact("tflite").path == "model.int8.tflite"  # falls back to what exists


def test_check_test_vectors(signed):
    from edge_common.runtime import open_session

    b = B.load_bundle(signed)
    art = b.select_artifact("onnx", "fp32")
    res = b.check_test_vectors(open_session(b.artifact_path(art)), art)
    assert res["max_abs_diff"] <= 1e-4 and res["top1_agreement"] == 1.0 and res["count"] == 4

    class Shifted:  # a session whose outputs drift by more than the tolerance
        def run(self, x):
            return open_session(b.artifact_path(art)).run(x) + 0.01

    with pytest.raises(BundleError, match="model.fp32.onnx test vectors differ"):
        b.check_test_vectors(Shifted(), art)

    class Reordered:  # same values, classes swapped: top-1 changes
        def run(self, x):
            y = open_session(b.artifact_path(art)).run(x)
            return y[:, ::-1]

    loose = B.Artifact(**{**art.to_dict(), "tolerance": {"max_abs": 1e9, "top1": True}})
    with pytest.raises(BundleError, match="model.fp32.onnx test vectors: top-1 class differs"):
        b.check_test_vectors(Reordered(), loose)


def test_tar_round_trip_is_deterministic(signed, keys, tmp_path):
    t1, t2 = tmp_path / "a.tar", tmp_path / "b.tar"
    B.pack_tar(signed, t1)
    B.pack_tar(signed, t2)
    assert t1.read_bytes() == t2.read_bytes()
    with tarfile.open(t1) as tar:
        names = tar.getnames()
        assert all(m.mtime == 0 and m.uid == 0 for m in tar.getmembers())
    assert "manifest.json" in names and "manifest.sig" in names
    b = B.load_bundle(t1, public_key=keys[1], extract_to=tmp_path / "x")
    assert b.root == tmp_path / "x" and b.signed and b.version == "v1"
    b2 = B.load_bundle(t1)  # temporary extraction, removed by close()
    root = b2.root
    assert (root / "model.fp32.onnx").is_file()
    b2.close()
    assert not root.exists()


def test_tampered_tar_refused_and_leaves_nothing(signed, tmp_path):
    t = tmp_path / "b.tar"
    (signed / "model.int8.tflite").write_bytes(b"evil")
    B.pack_tar(signed, t)
    with pytest.raises(IntegrityError, match="model.int8.tflite size mismatch"):
        B.load_bundle(t, extract_to=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def _tar_with(tmp_path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    t = tmp_path / "evil.tar"
    with tarfile.open(t, "w") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
        tar.addfile(member, io.BytesIO(data) if data else None)
    return t


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", size: int = 0):
    m = tarfile.TarInfo(name)
    m.type = kind
    m.linkname = linkname
    m.size = size
    return m


@pytest.mark.parametrize("member,reason", [
    (_member("/etc/evil", size=1), "absolute path"),
    (_member("../evil", size=1), r"'\.\.' in path"),
    (_member("a/../../evil", size=1), r"'\.\.' in path"),
    (_member("link", tarfile.SYMTYPE, "/etc/passwd"), "link"),
    (_member("hard", tarfile.LNKTYPE, "manifest.json"), "link"),
    (_member("dev", tarfile.CHRTYPE), "device or special file"),
    (_member("fifo", tarfile.FIFOTYPE), "device or special file"),
])
def test_unsafe_tar_member_refused(tmp_path, member, reason):
    t = _tar_with(tmp_path, member, b"x" if member.size else b"")
    out = tmp_path / "out"
    with pytest.raises(BundleError, match=f"unsafe tar member .*{reason}"):
        B.load_bundle(t, extract_to=out)
    assert not out.exists()
    assert not (tmp_path / "evil").exists()


def test_not_a_bundle(tmp_path):
    (tmp_path / "f.txt").write_text("hi")
    with pytest.raises(BundleError, match="neither a bundle directory nor a tar"):
        B.load_bundle(tmp_path / "f.txt")
    with pytest.raises(BundleError, match="bundle not found"):
        B.load_bundle(tmp_path / "nope")
    with pytest.raises(BundleError, match="missing file manifest.json"):
        B.load_bundle(tmp_path)


def test_keys_must_be_ed25519(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    k = ec.generate_private_key(ec.SECP256R1())
    pem = k.public_key().public_bytes(serialization.Encoding.PEM,
                                      serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(BundleError, match="not an Ed25519"):
        B.load_public_key(pem)
    with pytest.raises(BundleError, match="cannot read public key"):
        B.load_public_key(tmp_path / "missing.pub")


# -- hostile bundles (tests/common/badbundles.py; also for benchmarks/bench_faults.py) --

from badbundles import CASES  # noqa: E402


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_bundle_is_refused_with_one_line(case, tmp_path):
    good = make_bundle(tmp_path / "good")
    work = tmp_path / "work"
    work.mkdir()
    bad = case.make(good, work)
    dest = tmp_path / "extract"
    with pytest.raises(BundleError) as err:
        B.load_bundle(bad, extract_to=dest, **case.kwargs)
    msg = str(err.value)
    assert case.error in msg and "\n" not in msg, msg
    assert not dest.exists()  # nothing half-written
    B.load_bundle(good).close()  # the good one still loads: the case broke only its copy


def test_listed_members_in_a_top_folder_still_load(tmp_path):
    good = make_bundle(tmp_path / "tiny")
    tar_path = tmp_path / "nested.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(good, arcname="tiny")
    b = B.load_bundle(tar_path)
    assert b.root.name == "tiny" and b.version == "v1"
    b.close()


def test_tar_stream_cannot_exceed_its_header(tmp_path):
    """A member whose data runs past its header's size is cut there, never written on."""
    class Endless(io.RawIOBase):
        def readable(self):
            return True

        def readinto(self, buf):
            buf[:] = b"\0" * len(buf)
            return len(buf)

    with pytest.raises(BundleError, match="holds more than its header's 10 bytes"):
        bundle_tar._copy_limited(Endless(), tmp_path / "out", 10, "m")


def test_bundle_root_may_be_a_symlink(tmp_path):
    """An installed `current` symlink to a version folder is fine; only its contents
    must not be links."""
    good = make_bundle(tmp_path / "v1")
    (tmp_path / "current").symlink_to(good)
    assert B.load_bundle(tmp_path / "current").version == "v1"


def test_manifest_strict_loader():
    assert B.parse_manifest(b'{"a": 1}') == {"a": 1}
    with pytest.raises(BundleError, match="duplicate key 'a'"):
        B.parse_manifest(b'{"b": {"a": 1, "a": 2}}')
    with pytest.raises(BundleError, match="Infinity is not allowed"):
        B.parse_manifest(b'{"a": Infinity}')
    with pytest.raises(BundleError, match="must hold a JSON object"):
        B.parse_manifest(b"[1]")


def test_version_order():
    assert B.is_older("test-1", "test-2") and B.is_older("test-2", "test-10")
    assert not B.is_older("test-2", "test-2") and not B.is_older("test-10", "test-9")
    assert B.is_older("2026.11.26-235959-unstructured-0.50", "2026.11.27-000000-dense")
    assert B.is_older("2026.02.01-000000-dense", "2026.10.01-000000-dense")


def test_refused_tar_leaves_a_given_empty_folder_empty(tmp_path, keys):
    """Extracted fine, refused by the signature check: the folder is emptied again."""
    good = make_bundle(tmp_path / "good")
    tar = B.pack_tar(good, tmp_path / "b.tar")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(IntegrityError, match="not signed"):
        B.load_bundle(tar, public_key=keys[1], extract_to=dest)
    assert dest.is_dir() and not any(dest.iterdir())


@pytest.mark.parametrize("case", [c for c in CASES if c.name.endswith("-tar")],
                         ids=lambda c: c.name)
def test_tar_checks_hold_without_tarfiles_data_filter(case, tmp_path, monkeypatch):
    """Debian 12's Python 3.11.2 has no tarfile.data_filter: our own checks refuse alone."""
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    good = make_bundle(tmp_path / "good")
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(BundleError) as err:
        B.load_bundle(case.make(good, work), extract_to=tmp_path / "x")
    assert case.error in str(err.value)
    assert not (tmp_path / "x").exists() and not (tmp_path / "passwd").exists()
    tar = B.pack_tar(good, tmp_path / "ok.tar")              # and a good tar still loads
    B.load_bundle(tar).close()


def test_read_npz_retries_cpythons_threaded_ast_error_and_nothing_else(tmp_path, monkeypatch):
    """CPython 3.11's ``SystemError: AST constructor recursion depth mismatch`` (another
    thread compiling while numpy parses a header) is retried; other errors are not."""
    import numpy as np

    from edge_common import bundle as B

    path = tmp_path / "v.npz"
    np.savez(path, x=np.arange(3, dtype=np.float32))
    real_load, calls = np.load, []

    def flaky(*a, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise SystemError("AST constructor recursion depth mismatch (before=150, after=195)")
        return real_load(*a, **kw)

    monkeypatch.setattr(B.np, "load", flaky)
    assert B.read_npz(path)["x"].tolist() == [0.0, 1.0, 2.0] and len(calls) == 2

    def broken(*a, **kw):
        raise SystemError("something else")

    monkeypatch.setattr(B.np, "load", broken)
    with pytest.raises(SystemError, match="something else"):
        B.read_npz(path)
