"""Fixtures shared by every test folder. Area-specific ones live in tests/<area>/conftest.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Shared test helpers import as top-level modules: tests/onnxkit.py, and
# tests/device/devicekit.py (its torch-free tiny bundle serves the ansible and board suites too).
sys.path.insert(0, str(Path(__file__).parent / "device"))
sys.path.insert(0, str(Path(__file__).parent))

# Tests run on 2-core machines next to other work: keep math libraries to one thread each.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


@pytest.fixture
def cli_runner():
    from click.testing import CliRunner

    return CliRunner()
