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


@pytest.fixture(scope="session")
def pg_cluster():
    """A PostgreSQL cluster of its own for the whole session (tests/pgkit.py): Debian's
    ``postgresql`` package must be installed (`make test` installs it); a missing server is
    a failure in one line, not a skip."""
    from pgkit import PgCluster, pg_bindir
    from syskit import missing_line

    bindir = pg_bindir()
    if bindir is None or not (bindir / "initdb").is_file():
        pytest.fail(missing_line("initdb", "PG_BINDIR"), pytrace=False)
    cluster = PgCluster(bindir).start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def collector_db(request, tmp_path):
    """A collector ``--db`` for each backend: a new SQLite file, then an emptied PostgreSQL
    database in the session's own cluster (the test must close its stores)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'collector-db' / 'collector.db'}"
    return request.getfixturevalue("pg_cluster").clean_collector_db()
