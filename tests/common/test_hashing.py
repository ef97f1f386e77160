import hashlib
import json

from edge_common.hashing import settings_key, sha256_file


def test_sha256_file_matches_hashlib(tmp_path):
    p = tmp_path / "blob"
    p.write_bytes(b"x" * (3 << 20) + b"tail")  # several read chunks
    assert sha256_file(p) == hashlib.sha256(p.read_bytes()).hexdigest()


def test_settings_key_is_order_free_and_changes_with_any_value():
    a = settings_key({"train": {"epochs": 8, "lr": 0.002}, "data": {"img_size": 64}})
    b = settings_key({"data": {"img_size": 64}, "train": {"lr": 0.002, "epochs": 8}})
    assert a == b and len(a) == 16
    assert settings_key({"data": {"img_size": 48}, "train": {"lr": 0.002, "epochs": 8}}) != a


def test_settings_key_keeps_the_cache_keys_written_before_it_existed():
    """The baseline cache (build) and the study's cells were keyed by this exact recipe;
    the same settings must keep finding their cached results."""
    s = {"cell": {"method": "structured", "sparsity": 0.5}, "baseline": "abc"}
    old = hashlib.sha256(json.dumps(s, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert settings_key(s) == old
