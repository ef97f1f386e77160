"""The system programs the tests run for real, and the Debian package each comes from.

`make test` installs these packages first (the Makefile's ``TEST_DEBS``, through
tests/system-packages.sh), so a missing program is a set-up error: :func:`program` fails
the test with one line naming the package and the command — never a traceback from
``subprocess``, never a skip.
"""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path

# program → (Debian package, where Debian puts it when it is not on PATH)
PROGRAMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "mosquitto": ("mosquitto", ("/usr/sbin/mosquitto",)),
    "systemd-analyze": ("systemd", ("/usr/bin/systemd-analyze",)),
    "chromium": ("chromium", ("/usr/bin/chromium",)),
    # PostgreSQL's server programs live in a versioned folder, never on PATH
    "initdb": ("postgresql", ("/usr/lib/postgresql/*/bin/initdb",)),
}


def find(name: str, env: str | None = None) -> str | None:
    """The path of program ``name`` (``$env`` first when given and set), or None."""
    if env and os.environ.get(env):
        path = os.environ[env]
        return path if Path(path).is_file() else None
    _, places = PROGRAMS[name]
    found = shutil.which(name)
    if found:
        return found
    hits: list[str] = []
    for pattern in places:
        hits += sorted(glob.glob(pattern), key=_version_key)
    return hits[-1] if hits else None


def program(name: str, env: str | None = None) -> str:
    """The path of program ``name``; a missing one fails the test in one line."""
    import pytest

    found = find(name, env)
    if found is None:
        pytest.fail(missing_line(name, env), pytrace=False)
    return found


def missing_line(name: str, env: str | None = None) -> str:
    package, _ = PROGRAMS[name]
    where = f" (${env} = {os.environ[env]})" if env and os.environ.get(env) else ""
    return (f"{name} not found{where}: the tests need Debian's {package} package; as root "
            f"`make system-packages` installs it (or: apt-get install -y {package})")


def _version_key(path: str) -> tuple[int, str]:
    # /usr/lib/postgresql/15/bin/initdb: the newest major version last
    parts = Path(path).parts
    major = next((int(p) for p in parts if p.isdigit()), 0)
    return major, path
