"""Running the fleet playbooks: find ansible, build the wheel, run a playbook, read results.

``edgectl deploy`` and ``edgectl bench`` are thin wrappers over these helpers. The
playbooks live in the project's ``ansible/`` folder (``deploy.yml``, ``bench.yml``); the
boards get the device distribution, edge-agent (common + device, never host code), as a
wheel built here with ``pip wheel --no-deps`` into a temporary folder, byte-for-byte
reproducible (``SOURCE_DATE_EPOCH``) so an unchanged tree never reinstalls the agent.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_common.errors import ConfigError, EdgeError, MissingExtraError

# Fixed timestamp for the files inside the wheel: same sources → same bytes.
SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest date a zip can hold
# What the board's wheel (edge-agent, the checkout's pyproject.toml) is built from; everything
# else in a checkout, host/ included, is left behind.
WHEEL_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "common", "device")
WHEEL_GLOB = "edge_agent-*.whl"
WHEEL_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
DEFAULT_SERIAL = "25%"
DEFAULT_MAX_FAIL_PERCENTAGE = 0

_RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)"
    r"(?:\s+skipped=(?P<skipped>\d+))?(?:\s+rescued=(?P<rescued>\d+))?"
    r"(?:\s+ignored=(?P<ignored>\d+))?",
    re.MULTILINE,
)


def _is_checkout(root: Path) -> bool:
    return (root / "pyproject.toml").is_file() and (root / "ansible" / "deploy.yml").is_file()


def installed_from() -> Path | None:
    """The local folder pip installed this edgectl from (``pip install ./host``, not
    editable), as PEP 610's ``direct_url.json`` records it; None for any other install."""
    from importlib import metadata

    try:
        dist = metadata.distribution("edgectl")
    except metadata.PackageNotFoundError:
        return None
    here = Path(__file__).resolve()
    if Path(str(dist.locate_file("edgectl/fleet/ansible.py"))).resolve() != here:
        return None  # another edgectl than the one running
    try:
        info = json.loads(dist.read_text("direct_url.json") or "")
    except ValueError:
        return None
    if not isinstance(info, dict) or "dir_info" not in info:
        return None
    url = str(info.get("url", ""))
    if not url.startswith("file:"):
        return None
    return Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))


def project_root() -> Path:
    """The edgectl checkout whose ``ansible/`` and board sources deploy and bench use.

    ``$EDGECTL_PROJECT_DIR``; else the checkout this module is imported from (an editable
    install or PYTHONPATH); else the checkout pip installed it from (not editable: the
    folder ``installed_from`` names, or its parent); else the working directory. Never
    where this module's files lie in site-packages, and nothing is written there.
    """
    env = os.environ.get("EDGECTL_PROJECT_DIR")
    if env:
        if _is_checkout(Path(env)):
            return Path(env)
        raise EdgeError(f"EDGECTL_PROJECT_DIR={env} is not an edgectl checkout "
                        "(no pyproject.toml and ansible/deploy.yml there)")
    candidates = [Path(__file__).resolve().parents[3]]
    source = installed_from()
    if source is not None:
        candidates += [source, source.parent]
    candidates.append(Path.cwd())
    for root in candidates:
        if _is_checkout(root):
            return root
    raise EdgeError(
        "cannot find the edgectl project (pyproject.toml and ansible/deploy.yml): edgectl is "
        "not installed from a checkout; run it from one or set EDGECTL_PROJECT_DIR"
    )


def ansible_dir() -> Path:
    """The folder holding deploy.yml, bench.yml, roles/ and the inventories."""
    return project_root() / "ansible"


def default_inventory() -> Path:
    """``$EDGECTL_INVENTORY``, else ``ansible/inventory.yml`` of the project."""
    env = os.environ.get("EDGECTL_INVENTORY")
    path = Path(env) if env else ansible_dir() / "inventory.yml"
    if not path.is_file():
        raise ConfigError(
            f"no inventory: {path} does not exist; give --inventory (start from "
            "ansible/inventory.example.yml) or set EDGECTL_INVENTORY"
        )
    return path


def ansible_tool(name: str = "ansible-playbook") -> Path:
    """An ansible command-line tool: next to this interpreter first, then on PATH."""
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return local
    found = shutil.which(name)
    if found:
        return Path(found)
    raise MissingExtraError("ansible-core", "host", f"{name} not found next to {sys.executable}")


def build_wheel(
    out_dir: str | os.PathLike[str], source: str | os.PathLike[str] | None = None
) -> Path:
    """Build the board's wheel (edge-agent: common + device) into ``out_dir``; its path.

    Builds from a copy of the sources (a checkout's ``build/`` or ``*.egg-info`` never
    leak in, and the checkout is not written to), with fixed timestamps, so the same
    tree gives the same bytes. An existing identical wheel is left untouched.
    """
    src = Path(source) if source is not None else project_root()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgectl-wheel-") as tmp:
        copy = Path(tmp) / "src"
        copy.mkdir()
        for name in WHEEL_SOURCES:
            p = src / name
            if p.is_dir():
                shutil.copytree(p, copy / name, ignore=WHEEL_IGNORE)
            elif p.is_file():
                shutil.copy2(p, copy / name)
        if not (copy / "pyproject.toml").is_file():
            raise EdgeError(f"cannot build the wheel: no pyproject.toml in {src}")
        built = Path(tmp) / "wheel"
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
               "--quiet", "--wheel-dir", str(built), str(copy)]
        env = dict(os.environ, SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH, PIP_NO_INPUT="1")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        wheels = sorted(built.glob(WHEEL_GLOB)) if built.is_dir() else []
        if proc.returncode != 0 or not wheels:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel produced"]
            raise EdgeError(f"building the edge-agent wheel failed: {tail[0]}")
        dest = out / wheels[0].name
        if not (dest.is_file() and dest.read_bytes() == wheels[0].read_bytes()):
            shutil.copyfile(wheels[0], dest)
        return dest


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    """Per-host counters of the PLAY RECAP (``ok, changed, unreachable, failed, ...``)."""
    recap: dict[str, dict[str, int]] = {}
    start = output.rfind("PLAY RECAP")
    for m in _RECAP.finditer(output[start:] if start >= 0 else output):
        recap[m.group("host")] = {k: int(v) for k, v in m.groupdict().items()
                                  if k != "host" and v is not None}
    return recap


@dataclass
class PlaybookResult:
    """What one ``ansible-playbook`` run did."""

    returncode: int
    output: str
    recap: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def changed(self) -> int:
        return sum(h.get("changed", 0) for h in self.recap.values())

    def failed_hosts(self) -> list[str]:
        return sorted(h for h, c in self.recap.items()
                      if c.get("failed", 0) or c.get("unreachable", 0))


def playbook_command(
    playbook: str | os.PathLike[str],
    inventory: str | os.PathLike[str],
    *,
    limit: str | None = None,
    extra_vars: Mapping[str, Any] | None = None,
    raw_extra_vars: Sequence[str] = (),
    check: bool = False,
    tags: str | None = None,
) -> list[str]:
    """The ``ansible-playbook`` argv: our variables as one JSON ``-e`` (types kept), the
    user's ``-e`` strings after it (so they win)."""
    cmd = [str(ansible_tool()), "-i", str(inventory), str(playbook)]
    if limit:
        cmd += ["--limit", limit]
    if extra_vars:
        cmd += ["-e", json.dumps(dict(extra_vars), sort_keys=True)]
    for ev in raw_extra_vars:
        cmd += ["-e", ev]
    if tags:
        cmd += ["--tags", tags]
    if check:
        cmd.append("--check")
    return cmd


def run_playbook(
    cmd: Sequence[str],
    *,
    echo: Callable[[str], None] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> PlaybookResult:
    """Run ``cmd``, streaming each output line to ``echo`` while keeping it for the recap."""
    full_env = dict(os.environ)
    full_env.setdefault("ANSIBLE_RETRY_FILES_ENABLED", "false")
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    if echo is None or not sys.stdout.isatty():
        full_env.setdefault("ANSIBLE_NOCOLOR", "1")
    full_env.update(env or {})
    lines: list[str] = []
    try:
        proc = subprocess.Popen(
            list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=full_env, cwd=cwd, bufsize=1,
        )
    except OSError as err:
        raise EdgeError(f"cannot run {cmd[0]}: {err.strerror}") from err
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if echo is not None:
            echo(line.rstrip("\n"))
    rc = proc.wait()
    output = "".join(lines)
    return PlaybookResult(returncode=rc, output=output, recap=parse_recap(output))


# -- deploy ------------------------------------------------------------------------------


def deploy(
    inventory: str | os.PathLike[str],
    *,
    bundle: str | os.PathLike[str] | None = None,
    wheel: str | os.PathLike[str] | None = None,
    key: str | os.PathLike[str] | None = None,
    limit: str | None = None,
    check: bool = False,
    serial: str = DEFAULT_SERIAL,
    max_fail_percentage: int = DEFAULT_MAX_FAIL_PERCENTAGE,
    raw_extra_vars: Sequence[str] = (),
    tags: str | None = None,
    echo: Callable[[str], None] | None = None,
) -> PlaybookResult:
    """Run ``ansible/deploy.yml``: build the board's wheel unless given (in a temporary
    folder, gone afterwards), roll out in batches. ``key``: the Ed25519 public key (PEM)
    the boards verify bundles with, instead of the inventory's ``edge_agent_public_key_file``.

    Raises ``EdgeError`` naming the failed hosts when the playbook fails.
    """
    inv = Path(inventory)
    if not inv.is_file():
        raise ConfigError(f"inventory not found: {inv}")
    if bundle is not None and not Path(bundle).exists():
        raise ConfigError(f"bundle not found: {bundle}")
    if wheel is not None and not Path(wheel).is_file():
        raise ConfigError(f"wheel not found: {wheel}")
    extra: dict[str, Any] = {
        "deploy_serial": serial,
        "deploy_max_fail_percentage": max_fail_percentage,
    }
    if key is not None:
        from edge_common.signing import load_public_key

        try:
            load_public_key(key)  # never ship a private key, or a file that is no key
        except EdgeError as err:
            raise ConfigError(f"--key {key}: {err}") from err
        extra["edge_agent_public_key_file"] = str(Path(key).resolve())
    if bundle is not None:
        extra["edge_model_bundle"] = str(Path(bundle).resolve())
    playbook = ansible_dir() / "deploy.yml"
    with tempfile.TemporaryDirectory(prefix="edgectl-deploy-") as tmp:
        if wheel is None and tags != "model":  # a model-only rollout installs no code
            wheel = build_wheel(tmp)
        if wheel is not None:
            extra["edge_agent_wheel"] = str(Path(wheel).resolve())
        cmd = playbook_command(playbook, inv, limit=limit, extra_vars=extra,
                               raw_extra_vars=raw_extra_vars, check=check, tags=tags)
        result = run_playbook(cmd, echo=echo)
    if not result.ok:
        hosts = ", ".join(result.failed_hosts()) or "see the output above"
        raise EdgeError(f"deploy failed (ansible-playbook exit {result.returncode}): {hosts}")
    if not result.recap:
        where = f" for --limit {limit}" if limit else ""
        raise EdgeError(f"deploy matched no hosts in {inv}{where}")
    return result


# -- bench -------------------------------------------------------------------------------

DEFAULT_BENCH_DIR = Path("runs") / "bench"


def parse_threads(spec: str) -> list[int]:
    """``"1,2,4"`` → ``[1, 2, 4]``; a clear error for anything else."""
    try:
        threads = [int(t) for t in spec.split(",") if t.strip()]
    except ValueError as err:
        raise ConfigError(f"--threads must be a list like 1,2,4, got {spec!r}") from err
    if not threads or min(threads) < 1:
        raise ConfigError(f"--threads must be positive integers, got {spec!r}")
    return threads


def agent_command() -> list[str]:
    """The local ``edge-agent``: next to this interpreter, then on PATH, then ``-m``."""
    local = Path(sys.executable).parent / "edge-agent"
    if local.is_file() and os.access(local, os.X_OK):
        return [str(local)]
    found = shutil.which("edge-agent")
    return [found] if found else [sys.executable, "-m", "edge_agent.cli"]


def _check_report(report: Any, where: str) -> dict[str, Any]:
    if not isinstance(report, dict) or not isinstance(report.get("results"), list):
        raise EdgeError(f"{where}: not an edge-agent bench report (no 'results' list)")
    return report


def bench_local(bundle: str | os.PathLike[str], threads: Sequence[int],
                runs: int | None = None,
                reference: str | os.PathLike[str] | None = None,
                profile: bool = False) -> dict[str, Any]:
    """Run ``edge-agent bench --json`` on this machine (no Ansible) and return its report;
    ``profile``: ``bundle`` is a folder of models to time (``edge-agent bench --profile``)."""
    if not Path(bundle).exists():
        raise ConfigError(f"bundle not found: {bundle}")
    cmd = agent_command() + ["bench", "--json", "--profile" if profile else "--bundle",
                             str(bundle), "--threads", ",".join(str(t) for t in threads)]
    if runs:
        cmd += ["--runs", str(runs)]
    if reference:
        cmd += ["--reference", str(reference)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise EdgeError(f"edge-agent bench failed (exit {proc.returncode}): {last}")
    try:
        report = json.loads(proc.stdout)
    except ValueError as err:
        raise EdgeError(f"edge-agent bench printed no JSON: {proc.stdout[:200]!r}") from err
    return _check_report(report, "edge-agent bench")


def bench_ansible(
    target: str,
    inventory: str | os.PathLike[str],
    bundle: str | os.PathLike[str],
    threads: Sequence[int],
    runs: int | None = None,
    raw_extra_vars: Sequence[str] = (),
    echo: Callable[[str], None] | None = None,
    reference: str | os.PathLike[str] | None = None,
    profile: bool = False,
) -> dict[str, dict[str, Any]]:
    """Run ``ansible/bench.yml`` on ``target`` (a host or group); return {host: report}.
    ``reference`` (a model file) is uploaded and measured beside the bundle; ``profile``:
    ``bundle`` is a folder of models to time (``edge-agent bench --profile``)."""
    inv = Path(inventory)
    if not inv.is_file():
        raise ConfigError(f"inventory not found: {inv}")
    if not Path(bundle).exists():
        raise ConfigError(f"bundle not found: {bundle}")
    with tempfile.TemporaryDirectory(prefix="edgectl-bench-") as tmp:
        extra: dict[str, Any] = {
            "bench_hosts": target,
            "bench_bundle": str(Path(bundle).resolve()),
            "bench_results_dir": tmp,
            "bench_threads": ",".join(str(t) for t in threads),
            "bench_mode": "profile" if profile else "bundle",
        }
        if runs:
            extra["bench_runs"] = runs
        if reference:
            extra["bench_reference"] = str(Path(reference).resolve())
        cmd = playbook_command(ansible_dir() / "bench.yml", inv, extra_vars=extra,
                               raw_extra_vars=raw_extra_vars)
        result = run_playbook(cmd, echo=echo)
        if not result.ok:
            hosts = ", ".join(result.failed_hosts()) or "see the ansible output"
            detail = "" if echo else _last_failure(result.output)
            raise EdgeError(f"bench failed (ansible-playbook exit {result.returncode}) on "
                            f"{hosts}{detail}")
        reports = {}
        for path in sorted(Path(tmp).glob("*.json")):
            reports[path.stem] = _check_report(json.loads(path.read_text()), path.name)
    if not reports:
        raise EdgeError(f"no host or group named {target!r} in {inv}")
    return reports


def profile_runner(target: str, inventory: Path | None,
                   echo: Callable[[str], None] | None = None
                   ) -> Callable[[Path, list[int]], dict[str, Any]]:
    """The deadline search's way to time a profile folder (``latency_table.Runner``): the
    agent's bench here (``local``) or on an inventory host over Ansible (one host: a
    group would mix boards in one table). The caller that composes the search (cli/,
    a benchmark) passes it in, so pipeline/ never imports fleet/."""
    if target == "local":
        return lambda folder, threads: bench_local(folder, threads, profile=True)
    inv = inventory or default_inventory()

    def remote(folder: Path, threads: list[int]) -> dict[str, Any]:
        reports = bench_ansible(target, inv, folder, threads, echo=echo, profile=True)
        if len(reports) != 1:
            raise ConfigError(f"--target-device {target} names {len(reports)} hosts; a "
                              "latency table is for one board: name one host")
        return next(iter(reports.values()))

    return remote


def _last_failure(output: str) -> str:
    """The message of the last failed task in an ansible-playbook output, if any."""
    msgs = re.findall(r'"msg":\s*"((?:[^"\\]|\\.)*)"', output)
    return f": {msgs[-1][:300]}" if msgs else ""


def _slug(text: Any) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", str(text)).strip("-") or "unknown"


def store_run(report: dict[str, Any], host: str, target: str, via: str,
              results_dir: str | os.PathLike[str]) -> Path:
    """Write one run to ``results_dir/<host>_<model version>_<time>.json`` and return it."""
    from edge_common.fileio import write_json_atomic

    record = dict(report, host=host, target=target, via=via)
    version = (report.get("bundle") or {}).get("version", "unknown")
    stamp = re.sub(r"[-:]", "", str(report.get("created") or "")) or "undated"
    out = Path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{_slug(host)}_{_slug(version)}_{_slug(stamp)}.json"
    n = 1
    while path.exists():
        n += 1
        path = out / f"{_slug(host)}_{_slug(version)}_{_slug(stamp)}-{n}.json"
    write_json_atomic(path, record)
    return path


def load_runs(
    results_dir: str | os.PathLike[str], device: str | None = None
) -> list[dict[str, Any]]:
    """Stored runs, oldest first; ``device`` keeps those of that host, group or hostname."""
    runs = []
    d = Path(results_dir)
    for path in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            rec = json.loads(path.read_text())
        except ValueError:
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("results"), list):
            continue
        if device and device not in (rec.get("host"), rec.get("target"), rec.get("device")):
            continue
        rec["file"] = str(path)
        runs.append(rec)
    # Same-second runs are stored as X.json, X-2.json, X-10.json: shorter name first keeps
    # them in the order they were written ("-" sorts before "." as a plain string).
    runs.sort(key=lambda r: (str(r.get("created", "")), len(r["file"]), r["file"]))
    return runs


def _num(v: Any, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


def format_report(report: dict[str, Any], host: str | None = None,
                  manifest: dict[str, Any] | None = None) -> str:
    """One device's results as the bench table for people (``fleet.benchtable``)."""
    from edgectl.fleet.benchtable import bench_rows, format_table, notes

    m = report.get("machine") or {}
    b = report.get("bundle") or {}
    name = host or report.get("device", "?")
    head = f"{name}"
    if host and report.get("device") and report["device"] != host:
        head += f" ({report['device']})"
    head += (f": {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('arch', '?')}; "
             f"bundle {b.get('name', '?')}@{b.get('version', '?')}")
    rows = bench_rows(report, manifest or {})
    table = format_table(rows).splitlines()
    return "\n".join([head, *("  " + line for line in table),
                      *("  note: " + n for n in notes(rows, manifest or {}))])


def format_compare(runs: Sequence[dict[str, Any]]) -> str:
    """Stored runs side by side: one row per (artifact, threads), p50/p95 ms per run."""
    if not runs:
        return "no stored benchmark runs"
    cols = [f"{r.get('host') or r.get('device')}@{(r.get('bundle') or {}).get('version', '?')}"
            f" {str(r.get('created', ''))[:16]}" for r in runs]
    keys: list[tuple[str, Any]] = []
    cells: dict[tuple[str, Any], list[str]] = {}
    for i, run in enumerate(runs):
        for res in run.get("results", []):
            key = (str(res.get("artifact", "?")), res.get("threads", "?"))
            if key not in cells:
                keys.append(key)
                cells[key] = ["-"] * len(runs)
            lat = res.get("latency_ms") or {}
            cells[key][i] = ("error" if "error" in res else
                             f"{_num(lat.get('p50'), '.2f')}/{_num(lat.get('p95'), '.2f')}")
    width = max(14, *(len(c) for c in cols)) + 2
    header = f"{'artifact':<24}{'thr':>4}" + "".join(f"{c:>{width}}" for c in cols)
    lines = ["p50/p95 latency, ms", header]
    for key in keys:
        lines.append(f"{key[0]:<24}{key[1]!s:>4}" + "".join(f"{v:>{width}}" for v in cells[key]))
    return "\n".join(lines)
