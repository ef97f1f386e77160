from __future__ import annotations

import pytest

from edge_common.errors import ConfigError, DataNotFoundError, EdgeError, MissingExtraError
from edge_common.fileio import atomic_path, write_json_atomic


def test_leaves_inherit_root_and_builtin():
    assert issubclass(ConfigError, EdgeError) and issubclass(ConfigError, ValueError)
    assert issubclass(DataNotFoundError, FileNotFoundError)
    err = MissingExtraError("picamera2", "pi")
    assert isinstance(err, ImportError)
    assert "pip install 'edge-agent[pi]'" in str(err)


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "m.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text().strip().startswith("{")
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
