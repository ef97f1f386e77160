"""Fuzz targets for everything that parses input from outside (issue 36): Hypothesis
strategies and the property each target must hold, shared by ``tests/test_fuzz.py`` (a
budget that fits ``make test``) and ``benchmarks/bench_fuzz.py`` (the long run).

The property, everywhere: the input is **refused with one line** (an ``EdgeError`` whose
message has no newline; the CLIs exit non-zero with no traceback), or it is **accepted and
then behaves within the schema** with the reject output safe. Anything else (another
exception, a traceback, a refusal of several lines, an accepted value outside its
bounds, an older or mislabelled model serving) is a finding.

Targets: ``config`` (YAML text → ``validate-config`` and ``load_config``, then the
actuator built from it), ``manifest`` (a good bundle whose manifest is mutated →
``load_bundle`` as the board and ``bundle verify`` do, then the agent's loader),
``tar`` (archives of hostile members → ``load_bundle``), ``update`` (a hostile host's
answers → one ``UpdateWorker.check_once``).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json
import math
import shutil
import sys
import tarfile
import tempfile
import time
import typing
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

HERE = Path(__file__).resolve().parent
for sub in ("device", "common"):
    if str(HERE / sub) not in sys.path:
        sys.path.insert(0, str(HERE / sub))

from devicekit import frame, make_bundle  # noqa: E402
from fakehost import FakeHost  # noqa: E402

from edge_common.errors import EdgeError  # noqa: E402


class Finding(AssertionError):
    """An input that was neither refused in one line nor accepted within the schema."""


def one_line(err: BaseException, where: str, also: tuple[type, ...] = ()) -> None:
    msg = str(err)
    if not isinstance(err, (EdgeError, *also)):
        raise Finding(f"{where}: {type(err).__name__} instead of a refusal: {msg[:300]}")
    if "\n" in msg or not msg.strip():
        raise Finding(f"{where}: refusal not one line: {msg[:300]!r}")


# -- values ------------------------------------------------------------------------------

HOSTILE_NUMBERS = st.sampled_from([
    math.nan, math.inf, -math.inf, 1e300, -1e300, 10**30, -1, 0, 0.0, 1e-320, 2**63, -(2**63),
])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), HOSTILE_NUMBERS,
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["GPIO17", "BOARD11", "J8:11", "-5", "abc", "17", "1e300", "nan", "on",
                     "off", "reject", "pass", "mock", "file", "gpio", "none", "interval"]),
)
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)


# -- config ------------------------------------------------------------------------------


def _schema() -> dict[str, dict[str, Any]]:
    """Every section → key → field of the agent config."""
    from edge_agent.config import AgentConfig

    hints = typing.get_type_hints(AgentConfig)
    out: dict[str, dict[str, Any]] = {}
    for f in dataclasses.fields(AgentConfig):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out[f.name] = {g.name: g for g in dataclasses.fields(tp)}
    return out


def _good_value(f: Any) -> st.SearchStrategy[Any]:
    meta = f.metadata
    if "choices" in meta:
        return st.sampled_from(list(meta["choices"]))
    if "min" in meta and "max" in meta:
        lo, hi = meta["min"], meta["max"]
        ints = isinstance(f.default, int) and not isinstance(f.default, bool)
        return st.integers(int(lo), int(hi)) if ints else st.floats(lo, hi)
    if meta.get("pin"):
        return st.one_of(st.integers(-2, 30), st.sampled_from(["GPIO17", "GPIO27", "BOARD11"]))
    if f.default is dataclasses.MISSING:  # a nested section: hostile values only
        return JSON_VALUES
    return st.just(f.default)


@st.composite
def config_texts(draw: st.DrawFn) -> str:
    """YAML text of a sim-able agent config, most keys good, some hostile, some repeated."""
    schema = _schema()
    data: dict[str, Any] = {
        "camera": {"type": "synthetic", "size": 32},
        "trigger": {"type": "interval", "pin_factory": "mock"},
        "actuator": {"type": "gpio", "pin": 17, "pin_factory": "mock"},
    }
    for _ in range(draw(st.integers(0, 8))):
        section = draw(st.sampled_from(sorted(schema)))
        key = draw(st.sampled_from(sorted(schema[section])))
        if key in ("path", "dir", "public_key", "keys_dir", "token_file", "ca_cert",
                   "lock_file", "url", "pin_factory", "type", "endpoint", "host", "plc_host"):
            continue  # files, hosts and backends: not what this target fuzzes
        value = draw(st.one_of(_good_value(schema[section][key]), SCALARS))
        data.setdefault(section, {})[key] = value
    text = yaml.safe_dump(data, default_flow_style=False, allow_unicode=True)
    if draw(st.booleans()) and draw(st.integers(0, 9)) == 0:  # a section or key given twice
        text += draw(st.sampled_from(["actuator:\n  type: none\n",
                                      "trigger:\n  type: interval\n",
                                      "device_id: twice\n"]))
    return text


def check_config(text: str, tmp: Path) -> str:
    """The config property; returns ``"refused"`` or ``"accepted"``."""
    from gpiozero.pins.mock import MockFactory

    from edge_agent import cli
    from edge_agent.actuator import Actuator
    from edge_agent.config import AgentConfig, config_warnings, load_config

    path = tmp / "agent.yaml"
    path.write_text(text)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["validate-config", str(path)])
    try:
        cfg = load_config(path, env={})
    except Exception as e:  # noqa: BLE001 - judged by one_line
        one_line(e, "load_config")
        if code == 0:
            raise Finding(f"validate-config said OK but load_config refused: {e}") from e
        lines = err.getvalue().strip().splitlines()
        if len(lines) != 1 or "Traceback" in err.getvalue():
            raise Finding(f"validate-config refusal is not one line: {err.getvalue()[:300]}") from e
        return "refused"
    if code != 0:
        raise Finding(f"load_config accepted what validate-config refused: {err.getvalue()}")
    _within_schema(cfg, AgentConfig)
    config_warnings(cfg)
    ac = cfg.actuator
    factory = MockFactory()
    act = Actuator(17 if ac.pin is not None else None, ac.delay_ms, ac.pulse_ms, ac.active_high,
                   factory, safe_on=ac.safe_state == "on")
    try:
        act.arm()
        act.schedule(time.monotonic_ns())
        time.sleep(0.002)
        if act.failed:
            raise Finding(f"accepted config killed the actuator: {act.failed}")
    finally:
        act.stop()
    if ac.pin is not None:
        level = factory.pin(17).state
        want = ac.safe_state == "on"
        if bool(level) != (want if ac.active_high else not want):
            raise Finding(f"output not at its safe level after stop: {level}")
    return "accepted"


def _within_schema(obj: Any, cls: type, prefix: str = "") -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        v, tp = getattr(obj, f.name), hints[f.name]
        if dataclasses.is_dataclass(tp):
            _within_schema(v, tp, prefix + f.name + ".")
            continue
        meta = f.metadata
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if not math.isfinite(v):
                raise Finding(f"{prefix}{f.name} accepted non-finite {v}")
            if ("min" in meta and v < meta["min"]) or ("max" in meta and v > meta["max"]):
                raise Finding(f"{prefix}{f.name} accepted {v} outside its bounds")
        if "choices" in meta and v is not None and not isinstance(v, list) \
                and v not in meta["choices"]:
            raise Finding(f"{prefix}{f.name} accepted {v!r} outside its choices")


# -- manifests ---------------------------------------------------------------------------

MANIFEST_PATHS = [
    "schema_version", "name", "version", "labels", "reject_labels", "input", "input.size",
    "input.mean", "input.std", "input.layout", "input.colour_order", "input.dtype",
    "artifacts", "artifacts.0", "artifacts.0.path", "artifacts.0.format",
    "artifacts.0.precision", "artifacts.0.sha256", "artifacts.0.bytes",
    "artifacts.0.metrics", "artifacts.0.metrics.deployable", "artifacts.0.tolerance",
    "artifacts.0.tolerance.max_abs", "artifacts.0.tolerance.top1", "test_vectors",
    "test_vectors.path", "test_vectors.sha256", "test_vectors.bytes", "metrics",
    "metrics.accuracy", "min_accuracy", "deployable", "default_precision", "deadline",
    "deadline.budget_ms", "created", "provenance",
]


@st.composite
def manifest_edits(draw: st.DrawFn) -> list[tuple[str, str, Any]]:
    """Edits to a good manifest: ``(op, path, value)`` with op set | delete | raw."""
    edits = []
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["set", "set", "set", "delete", "raw"]))
        path = draw(st.sampled_from(MANIFEST_PATHS))
        value = draw(JSON_VALUES) if op == "set" else None
        if op == "raw":
            value = draw(st.sampled_from([
                "dup", "nan", "deep", "deep-ok", "trailing", "bom", "not-object"]))
        edits.append((op, path, value))
    return edits


def _apply(m: dict[str, Any], path: str, op: str, value: Any) -> None:
    *parents, last = path.split(".")
    node: Any = m
    for key in parents:
        try:
            node = node[int(key)] if isinstance(node, list) else node[key]
        except (KeyError, IndexError, TypeError, ValueError):
            return
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            return
        idx: Any = int(last)
    elif isinstance(node, dict):
        idx = last
    else:
        return
    if op == "delete":
        with contextlib.suppress(KeyError, IndexError):
            del node[idx]
    else:
        node[idx] = value


def manifest_bytes(good: dict[str, Any], edits: list[tuple[str, str, Any]]) -> bytes:
    m = copy.deepcopy(good)
    raw_ops = []
    for op, path, value in edits:
        if op == "raw":
            raw_ops.append(value)
        else:
            _apply(m, path, op, value)
    text = json.dumps(m, allow_nan=True)
    for r in raw_ops:
        body = text.rstrip().rstrip("}")
        if r == "dup":
            text = body + ', "version": "evil"}'
        elif r == "nan":
            text = body + ', "z": NaN}'
        elif r == "deep":
            text = body + ', "z": ' + "[" * 5000 + "]" * 5000 + "}"
        elif r == "deep-ok":
            text = body + ', "provenance": {"a": {"b": {"c": [1]}}}}'
        elif r == "trailing":
            text = text + " x"
        elif r == "bom":
            text = "\ufeff" + text
        elif r == "not-object":
            text = "[" + text + "]"
    return text.encode("utf-8", "surrogatepass")


class ManifestTarget:
    """A good bundle once; each example rewrites its manifest in a copy."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.good = make_bundle(root / "good", version="2026.06.01-000000-good")
        self.good_manifest = json.loads((self.good / "manifest.json").read_text())

    def check(self, edits: list[tuple[str, str, Any]], with_cli: bool = True) -> str:
        from edge_agent.classifier import Classifier
        from edge_agent.decision import Policy, decide
        from edge_common.bundle import load_bundle, replay_test_vectors

        work = Path(tempfile.mkdtemp(dir=self.root))
        try:
            b = work / "b"
            shutil.copytree(self.good, b)
            try:
                (b / "manifest.json").write_bytes(manifest_bytes(self.good_manifest, edits))
            except UnicodeEncodeError:
                return "skipped"
            try:
                bundle = load_bundle(b)
            except Exception as e:  # noqa: BLE001
                one_line(e, "load_bundle")
                if with_cli:
                    self._cli_refuses(b)
                return "refused"
            try:
                _bundle_within_format(bundle)
                replay_test_vectors(bundle)
            finally:
                bundle.close()
            try:
                c = Classifier.load(str(b))
            except Exception as e:  # noqa: BLE001
                one_line(e, "Classifier.load")
                return "refused"
            try:
                for colour in ("red", "green"):
                    s = c.classify(frame(colour))
                    v = decide(s.probs, c.labels, c.reject_labels, Policy())
                    if v.error is None and not all(math.isfinite(p) for p in s.probs):
                        raise Finding("non-finite scores decided without an error")
            finally:
                c.close()
            return "accepted"
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _cli_refuses(self, b: Path) -> None:
        from click.testing import CliRunner

        from edgectl.cli import main as edgectl

        res = CliRunner().invoke(edgectl, ["bundle", "verify", str(b)])
        if res.exit_code == 0:
            raise Finding("bundle verify accepted what load_bundle refused")
        if res.exception is not None and not isinstance(res.exception, SystemExit):
            raise Finding(f"bundle verify raised {type(res.exception).__name__}: "
                          f"{res.exception}")
        if "Traceback" in res.output:
            raise Finding(f"bundle verify printed a traceback: {res.output[:300]}")


def _bundle_within_format(bundle: Any) -> None:
    m = bundle.manifest
    if type(m["schema_version"]) is not int or m["schema_version"] != 1:
        raise Finding(f"accepted schema_version {m['schema_version']!r}")
    spec = bundle.input_spec
    if not (isinstance(spec.size, int) and all(math.isfinite(v) for v in spec.mean + spec.std)
            and min(spec.std) > 0):
        raise Finding(f"accepted input spec {spec}")
    for a in bundle.artifacts:
        if not (isinstance(a.bytes, int) and isinstance(a.sha256, str)):
            raise Finding(f"accepted artifact {a}")
    acc = (m.get("metrics") or {}).get("accuracy")
    if acc is not None and not (isinstance(acc, (int, float)) and 0 <= acc <= 1):
        raise Finding(f"accepted metrics.accuracy {acc!r}")


# -- tar layouts -------------------------------------------------------------------------

MEMBER_NAMES = st.one_of(
    st.sampled_from(["manifest.json", "manifest.sig", "model.fp32.onnx", "test_vectors.npz",
                     "tiny/manifest.json", "tiny/model.fp32.onnx", "../evil", "/tmp/evil",
                     "a/../../evil", "extra.bin", "tiny", ".", "", "dir/", "model.fp32.onnx/x"]),
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20),
)
MEMBER_TYPES = st.sampled_from([tarfile.REGTYPE, tarfile.REGTYPE, tarfile.REGTYPE,
                                tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
                                tarfile.FIFOTYPE, tarfile.CHRTYPE])


@st.composite
def tar_layouts(draw: st.DrawFn) -> list[tuple[str, bytes, str, int | None]]:
    """Members to append to (or replace in) a good bundle's tar: (name, type, link, size)."""
    return draw(st.lists(st.tuples(
        MEMBER_NAMES, MEMBER_TYPES,
        st.sampled_from(["", "manifest.json", "/etc/passwd", "../x"]),
        st.one_of(st.none(), st.integers(0, 64), st.sampled_from([2**40, 2**26 + 1]))),
        max_size=4))


class TarTarget:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.good = make_bundle(root / "tiny", version="2026.06.01-000000-tar")
        self.files = {p.name: p.read_bytes() for p in self.good.iterdir()}

    def check(self, layout: list[tuple[str, bytes, str, int | None]], keep_good: bool,
              nest: bool) -> str:
        from edge_common.bundle import load_bundle

        work = Path(tempfile.mkdtemp(dir=self.root))
        try:
            tar_path = work / "b.tar"
            with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
                if keep_good:
                    for name, data in self.files.items():
                        info = tarfile.TarInfo(f"tiny/{name}" if nest else name)
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
                for name, kind, link, size in layout:
                    info = tarfile.TarInfo(name)
                    info.type, info.linkname = kind, link
                    data = b"x" * (size if size is not None and size <= 64 else 0)
                    info.size = len(data) if kind == tarfile.REGTYPE else 0
                    try:
                        tar.addfile(info, io.BytesIO(data) if data else None)
                    except (ValueError, OSError, UnicodeError):
                        return "skipped"
                    if size is not None and size > 64:
                        pass  # large claimed sizes are covered by badbundles' sparse tars
            dest = work / "x"
            try:
                b = load_bundle(tar_path, extract_to=dest)
            except Exception as e:  # noqa: BLE001
                one_line(e, "load_bundle(tar)")
                if dest.exists():
                    raise Finding(f"refused tar left {dest} behind") from e
                outside = sorted(p.name for p in work.iterdir())
                if outside != ["b.tar"]:
                    raise Finding(f"refused tar wrote outside its folder: {outside}") from e
                return "refused"
            try:
                names = {p.relative_to(b.root).as_posix() for p in b.root.rglob("*")}
                allowed = {"manifest.json", "manifest.sig", "model.fp32.onnx",
                           "test_vectors.npz"}
                if not names <= allowed:
                    raise Finding(f"accepted tar holds {sorted(names - allowed)}")
            finally:
                b.close()
            return "accepted"
        finally:
            shutil.rmtree(work, ignore_errors=True)


# -- update-host answers -----------------------------------------------------------------

CLAIMS = st.sampled_from(["older", "newer", "newer-mislabelled", "equal", "equal-respelled",
                          "garbage"])
BODIES = st.sampled_from(["match", "older", "mislabelled", "truncated", "random", "empty",
                          "unsigned", "other-key"])


class UpdateTarget:
    """An agent serving ``CURRENT`` with a trusted key, and a hostile host."""

    CURRENT = "2026.06.01-000000-structured-0.50"
    OLDER = "2026.01.01-000000-structured-0.50"
    NEWER = "2026.09.01-000000-structured-0.50"

    def __init__(self, root: Path) -> None:
        from devicekit import write_config

        from edge_agent.config import load_config
        from edge_agent.service import Agent
        from edge_common.bundle import generate_keypair, pack_tar, sign_manifest

        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        priv, pub = generate_keypair()
        other, _ = generate_keypair()
        (root / "edge.pub").write_bytes(pub)
        self.pub = root / "edge.pub"
        self.tars: dict[str, bytes] = {}
        for name, version, key in (("current", self.CURRENT, priv), ("older", self.OLDER, priv),
                                   ("newer", self.NEWER, priv),
                                   ("mislabelled", "2026.10.01-000000-mislabelled", priv),
                                   ("unsigned", self.NEWER, None),
                                   ("other-key", self.NEWER, other)):
            b = make_bundle(root / name, version=version)
            if key is not None:
                sign_manifest(b, key)
            self.tars[name] = pack_tar(b, root / f"{name}.tar").read_bytes()
        cfg = load_config(write_config(root / "agent.yaml", root / "current"), env={})
        cfg.bundle.public_key = str(self.pub)
        self.agent = Agent(cfg)
        self.agent.open()
        self.base = self.agent.classifier
        self.host = FakeHost()

    def close(self) -> None:
        self.host.close()
        self.agent.close()

    def check(self, claim: str, body: str, allow: bool, sha_ok: bool, header_ok: bool,
              raw: bytes | None) -> str:
        import hashlib

        from edge_agent.hostclient import HostClient, HostUnavailable
        from edge_agent.update import UpdateWorker
        from edge_common.bundle import version_key

        self.agent.classifier = self.base
        data = {"match": self.tars["newer"], "older": self.tars["older"],
                "mislabelled": self.tars["mislabelled"],
                "truncated": self.tars["newer"][: len(self.tars["newer"]) // 2],
                "random": bytes(range(256)) * 8, "empty": b"",
                "unsigned": self.tars["unsigned"], "other-key": self.tars["other-key"]}[body]
        version = {"older": self.OLDER, "newer": self.NEWER,
                   "newer-mislabelled": "2026.11.01-000000-x", "equal": self.CURRENT,
                   "equal-respelled": "2026-06-01_000000_STRUCTURED-0.50",
                   "garbage": "%%%"}[claim]
        sha = hashlib.sha256(data).hexdigest()
        self.host.desired = {"version": version, "sha256": sha if sha_ok else "0" * 64,
                             "allow_downgrade": allow}
        self.host.raw_desired = raw
        self.host.body = data
        self.host.headers = {"X-Bundle-SHA256": sha if header_ok else "f" * 64,
                             "X-Bundle-Version": version}
        state = Path(tempfile.mkdtemp(dir=self.root))
        w = UpdateWorker(self.agent, HostClient(self.host.url, "fuzz", "t", timeout_s=5),
                         poll_s=1, health_window_s=0, public_keys=[str(self.pub)],
                         state_dir=state)
        before = self.agent.classifier.version
        try:
            try:
                outcome = w.check_once()
            except HostUnavailable as e:
                one_line(e, "check_once (host unavailable)", also=(HostUnavailable,))
                return "refused"
            except Exception as e:  # noqa: BLE001
                raise Finding(f"check_once raised {type(e).__name__}: {e}") from e
            after = self.agent.classifier.version
            if outcome is not None and outcome.reason and "\n" in outcome.reason:
                raise Finding(f"refusal reason not one line: {outcome.reason[:200]!r}")
            if after != before:
                if outcome is None or outcome.outcome != "applied":
                    raise Finding(f"model changed without an applied outcome: {outcome}")
                if version_key(after) != version_key(version):
                    raise Finding(f"serving {after} though the host named {version}")
                if version_key(after) < version_key(before) and not allow:
                    raise Finding(f"downgraded {before} → {after} without allow_downgrade")
                if version_key(after) == version_key(before):
                    raise Finding(f"re-applied an equal version {after}")
                self.agent.classifier.close()
                return "accepted"
            if outcome is not None and outcome.outcome == "refused" and list(state.glob("*.tar")):
                raise Finding("a refused bundle's tar was kept")
            return "refused" if outcome is not None else "no-op"
        finally:
            shutil.rmtree(state, ignore_errors=True)
