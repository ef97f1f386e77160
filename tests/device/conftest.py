"""Device fixtures (helpers live in devicekit.py, importable from the tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
from devicekit import make_bundle, write_config


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle") / "bundle")


@pytest.fixture
def sim_config(tmp_path, tiny_bundle) -> Path:
    return write_config(tmp_path / "agent.yaml", tiny_bundle)
