"""The agent's YAML config: its schema as plain dataclasses (every key, its type, default,
range and meaning), the rules that span several keys, environment overrides, warnings,
and ``load_config``. The walker that checks a mapping against the schema is
``edge_agent.schema``; the reference page is generated from the same schema
(``config_doc.reference_markdown``, kept in ``docs/agent-config.md``).

Every error names the key path: ``config: camera.type: must be one of picamera2, opencv,
replay, synthetic``. Relative paths are resolved against the config file's folder.
Environment overrides (for the systemd drop-in or a quick laptop run): ``EDGE_BUNDLE``,
``EDGE_JOURNAL_DIR``, ``EDGE_CAMERA_TYPE``, ``EDGE_TRIGGER_TYPE``, ``EDGE_ACTUATOR_TYPE``,
``EDGE_RUNTIME_TYPE``, ``EDGE_PIN_FACTORY``.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edge_agent.pins import gpio_number
from edge_agent.schema import StrictLoader, build
from edge_agent.schema import field_doc as _f  # short: every field of the schema uses it
from edge_common.errors import ConfigError

PIN_FACTORIES = ("mock", "file", "lgpio", "rpigpio", "pigpio", "native")
# The reject output's physical bounds: a conveyor whose rejector sits more than a minute
# of travel after the camera is not a line we can time; a pulse over 10 s is a hold, not a
# reject (and a bounded pulse is what keeps the output from staying on).
MAX_DELAY_MS = 60_000.0
MAX_PULSE_MS = 10_000.0


@dataclass
class BundleConfig:
    """The model bundle to serve."""

    path: str = _f("bundle", "Bundle folder or .tar (relative to this file)", path=True)
    public_key: str | None = _f(
        None,
        "Ed25519 public key (PEM file); when set the manifest signature is checked",
        path=True,
    )


@dataclass
class RuntimeConfig:
    """Which artifact of the bundle to run, and how."""

    type: str = _f("onnx", "Inference runtime", choices=("onnx", "tflite"))
    precision: str | None = _f(
        None,
        "Artifact precision; null takes the bundle's first of that format",
        choices=("fp32", "int8"),
    )
    threads: int = _f(1, "Intra-op threads", min=1, max=64)


@dataclass
class CameraConfig:
    """Where frames come from. Every backend delivers H×W×3 uint8 RGB stamped at capture."""

    type: str = _f("synthetic", "Backend", choices=("picamera2", "opencv", "replay", "synthetic"))
    width: int = _f(640, "Capture width, pixels (picamera2, opencv)", min=1, max=16384)
    height: int = _f(480, "Capture height, pixels (picamera2, opencv)", min=1, max=16384)
    device: int | str = _f(0, "opencv: V4L2 index (0 = /dev/video0) or device path",
                           min=0, max=255)
    pipeline: str | None = _f(
        None, "opencv: a GStreamer pipeline string (Jetson CSI: nvarguscamerasrc ... ! appsink)"
    )
    path: str | None = _f(
        None,
        "replay: a folder of images (class subfolders = ground truth) or a video file",
        path=True,
    )
    loop: bool = _f(True, "replay: start again at the end (false: stop the run)")
    preload: bool = _f(False, "replay: decode every image into memory first (benchmarks)")
    seed: int = _f(0, "synthetic: dataset seed", min=0, max=2**32 - 1)
    size: int = _f(96, "synthetic: rendered frame size, pixels (square)", min=8, max=4096)
    difficulty: float | None = _f(
        None, "synthetic: defect subtlety, null = the dataset default", min=0.0, max=1.0
    )
    retry_backoff_s: float = _f(0.5, "First wait before reopening a failed camera, s", min=0.0,
                                max=3600.0)
    retry_backoff_max_s: float = _f(10.0, "Longest wait between reopen attempts, s", min=0.0,
                                    max=3600.0)
    give_up_s: float = _f(
        60.0, "Exit (non-zero) after the camera has failed this long; 0 = retry forever", min=0.0,
        max=86400.0
    )


@dataclass
class TriggerConfig:
    """What starts one capture: a beam-break sensor on a GPIO input, or a fixed rate."""

    type: str = _f(
        "interval",
        "Trigger source; modbus / opcua: the PLC triggers over the agent's server (plc:)",
        choices=("gpio", "interval", "modbus", "opcua"),
    )
    rate_hz: float = _f(10.0, "interval: items per second; 0 = unthrottled (benchmarks)", min=0.0,
                        max=10000.0)
    pin: int | str | None = _f(None, "gpio: input pin (BCM number or gpiozero name, e.g. GPIO17)",
                               pin=True)
    pull: str = _f(
        "up",
        "gpio: internal pull; up = active low (open-collector sensors)",
        choices=("up", "down", "floating"),
    )
    active_high: bool = _f(True, "gpio: with pull floating, whether high means 'item present'")
    bounce_ms: float | None = _f(5.0, "gpio: debounce window, ms; null = none", min=0.0,
                                  max=1000.0)
    pin_factory: str | None = _f(
        None,
        "gpiozero pin factory; null = gpiozero's default (GPIOZERO_PIN_FACTORY)",
        choices=PIN_FACTORIES,
    )


@dataclass
class ModbusConfig:
    """Modbus TCP (pymodbus): the agent's server (register map in docs/plc.md) and the
    client that writes results into a PLC's holding registers (``results: [modbus-client]``)."""

    bind: str = _f(
        "127.0.0.1", "Server: address to listen on (the PLC network's interface; no auth)"
    )
    port: int = _f(5020, "Server: TCP port (502 needs CAP_NET_BIND_SERVICE)", min=1, max=65535)
    plc_host: str | None = _f(None, "Client: the PLC's address (required for modbus-client)")
    plc_port: int = _f(502, "Client: the PLC's Modbus TCP port", min=1, max=65535)
    plc_device_id: int = _f(1, "Client: the PLC's unit / device id", min=0, max=255)
    plc_base: int = _f(0, "Client: first holding register of the result block", min=0,
                       max=65535)
    timeout_s: float = _f(1.0, "Client: request timeout, s", min=0.01, max=60.0)


@dataclass
class OpcUaConfig:
    """OPC UA (asyncua): the agent's server, the signals as variables of one object."""

    endpoint: str = _f(
        "opc.tcp://127.0.0.1:4840/edge-agent/", "Server endpoint URL (host: the interface)"
    )
    namespace: str = _f("urn:edgectl:edge-agent", "Namespace URI of the station's nodes")


@dataclass
class MqttConfig:
    """MQTT (paho-mqtt 2): every decision and a periodic status as JSON, QoS 1."""

    host: str = _f("127.0.0.1", "Broker address")
    port: int = _f(1883, "Broker port", min=1, max=65535)
    topic_prefix: str = _f(
        "edgectl", "Topics: <prefix>/<device_id>/decision, .../status (retained)"
    )
    keepalive_s: int = _f(10, "Keepalive, s (the broker sends the last will after 1.5×)", min=1,
                          max=65535)
    status_every_s: float = _f(5.0, "How often the status is published, s", min=0.1, max=3600.0)
    buffer_max: int = _f(
        10000, "Messages held while the broker is away (decisions, results and status; "
        "beyond that the newest are refused and counted in mqtt.dropped)", min=1,
        max=1_000_000
    )


@dataclass
class PlcConfig:
    """The PLC handshake (edge_agent.plc; docs/plc.md) and its backends."""

    result_deadline_ms: float = _f(
        500.0, "Trigger → result deadline: no verdict by then = Fail + fault 1", min=1.0,
        max=60000.0
    )
    max_in_flight: int = _f(16, "Parts triggered and not yet answered, at most", min=1, max=1000)
    heartbeat_ms: float = _f(500.0, "How often the heartbeat counter steps, ms", min=10.0,
                             max=60000.0)
    modbus: ModbusConfig = field(default_factory=ModbusConfig, metadata={"doc": "Modbus TCP"})
    opcua: OpcUaConfig = field(default_factory=OpcUaConfig, metadata={"doc": "OPC UA"})
    mqtt: MqttConfig = field(default_factory=MqttConfig, metadata={"doc": "MQTT"})


RESULT_SINKS = ("modbus", "modbus-client", "opcua", "mqtt")


@dataclass
class DecisionConfig:
    """Turn probabilities into ok / reject / review (pure; see edge_agent.decision)."""

    threshold: float = _f(
        0.5, "Reject when the summed reject-label probability ≥ this", min=0.0, max=1.0
    )
    review_margin: float = _f(
        0.0,
        "Items within ±margin of the threshold are 'review' (low confidence)",
        min=0.0,
        max=0.5,
    )
    review_policy: str = _f("reject", "What review items do", choices=("reject", "pass"))
    error_policy: str = _f(
        "reject",
        "What unclassifiable items (errors) do; both are flagged 'review'",
        choices=("reject", "pass"),
    )


@dataclass
class ActuatorConfig:
    """The rejector: a gpiozero DigitalOutputDevice pulsed after the conveyor delay."""

    type: str = _f("gpio", "gpio drives a pin; none only records", choices=("gpio", "none"))
    pin: int | str | None = _f(None, "Output pin (BCM number or gpiozero name)", pin=True)
    active_high: bool = _f(True, "True: pin high = actuator on")
    safe_state: str = _f(
        "off",
        "Level the output is driven to before the model loads, on every fault and stop, and "
        "by `edge-agent safe-state` (the unit's ExecStopPost): off = actuator released, on = "
        "held (a diverter that rejects everything while the agent is down)",
        choices=("off", "on"),
    )
    delay_ms: float = _f(
        200.0, "Trigger → pulse start: the conveyor's travel time, ms (≤ 60 s)", min=0.0,
        max=MAX_DELAY_MS)
    pulse_ms: float = _f(50.0, "Pulse width, ms (≤ 10 s: a reject, not a hold)", min=0.1,
                         max=MAX_PULSE_MS)
    pin_factory: str | None = _f(
        None,
        "gpiozero pin factory; null = gpiozero's default; file = a stand-in whose levels "
        "live in files under $EDGE_PIN_STATE_DIR (simulated station, fault benchmarks)",
        choices=PIN_FACTORIES,
    )
    guard: bool = _f(
        True,
        "Drive the output from a separate guard process that times every pulse, so its "
        "on-time stays ≤ pulse_ms whatever happens to the agent (edge_agent.guard); the "
        "mock factory always runs in-process (its levels live in one process)",
    )
    lease_ms: float = _f(
        1000.0, "Guard, with safe_state on: no word from the agent this long → the output "
        "is held at its safe level (every part diverted) until the agent is back",
        min=50.0, max=10000.0,
    )


@dataclass
class JournalConfig:
    """Where decisions, samples and the status file live, and how much disk they may use."""

    dir: str = _f("journal", "Data folder (journal.sqlite, samples/, status.json)", path=True)
    synchronous: str = _f(
        "full",
        "full: fsync every commit (power-loss safe); normal: survives crashes only",
        choices=("full", "normal"),
    )
    max_bytes: int = _f(1_000_000_000, "Disk budget for journal + samples, bytes", min=1,
                        max=10**15)
    max_rows: int = _f(1_000_000, "Most decisions kept", min=1, max=10**10)
    prune_every_s: float = _f(60.0, "How often the budget is enforced, s", min=0.1, max=86400.0)
    status_every_s: float = _f(2.0, "How often status.json is rewritten, s", min=0.1, max=3600.0)
    log_every_s: float = _f(30.0, "How often a latency summary is logged, s", min=0.1,
                            max=86400.0)


@dataclass
class SamplesConfig:
    """Which frames are kept as image samples (and synced to the host)."""

    enabled: bool = _f(True, "Keep samples at all")
    rejects: bool = _f(True, "Keep every rejected item")
    reviews: bool = _f(True, "Keep every review (and unclassifiable) item")
    rate: float = _f(0.01, "Fraction of the other items kept at random", min=0.0, max=1.0)
    format: str = _f("jpeg", "Image format", choices=("jpeg", "png"))


@dataclass
class HostConfig:
    """The host collector the sync worker talks to (edge_agent.sync)."""

    url: str | None = _f(None, "Collector base URL, e.g. https://host:8080; null = no sync")
    token: str | None = _f(None, "Device token (prefer token_file)")
    token_file: str | None = _f(None, "File holding the device token", path=True)
    ca_cert: str | None = _f(None, "CA bundle for the collector's TLS certificate", path=True)
    verify: bool = _f(True, "Verify TLS certificates")
    batch_size: int = _f(200, "Decisions per upload", min=1, max=10000)
    interval_s: float = _f(10.0, "Seconds between sync rounds", min=0.1, max=86400.0)
    heartbeat_s: float = _f(30.0, "Seconds between heartbeats", min=0.1, max=86400.0)
    timeout_s: float = _f(10.0, "HTTP timeout, s", min=0.1, max=600.0)
    backoff_max_s: float = _f(300.0, "Longest retry backoff, s", min=0.1, max=86400.0)


@dataclass
class UpdateConfig:
    """Model updates pulled from the host (edge_agent.update)."""

    enabled: bool = _f(False, "Poll the host for the desired model version")
    poll_s: float = _f(60.0, "Seconds between polls", min=1.0, max=86400.0)
    lock_file: str | None = _f(None, "While this file exists, updates wait", path=True)
    lock_pin: int | str | None = _f(None, "While this input pin is active, updates wait",
                                    pin=True)
    health_window_s: float = _f(120.0, "Roll back if the new model is unhealthy within, s "
                                "(and its first 20 items: up to 10 windows on an idle line)",
                                min=0.0, max=86400.0)
    keys_dir: str | None = _f(
        "/etc/edge-agent/keys",
        "Folder of trusted Ed25519 public keys (PEM files); every update must be signed by "
        "one of them, and none usable refuses every update (null: unsigned updates)",
        path=True,
    )
    public_key: str | None = _f(None, "One trusted public key (PEM)", path=True)


@dataclass
class MetricsConfig:
    """The agent's own Prometheus /metrics (edge_agent.metrics); off unless port is set."""

    port: int | None = _f(None, "Serve /metrics on this port (0: any free one); null = off",
                          min=0, max=65535)
    bind: str = _f("127.0.0.1", "Address to serve /metrics on (0.0.0.0: every interface)")


@dataclass
class AgentConfig:
    """The whole agent config (one YAML file)."""

    device_id: str = _f("", "This board's id (default: the hostname)")
    log_level: str = _f("info", "Logging level", choices=("debug", "info", "warning", "error"))
    bundle: BundleConfig = field(default_factory=BundleConfig, metadata={"doc": "Model bundle"})
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig, metadata={"doc": "Runtime"})
    camera: CameraConfig = field(default_factory=CameraConfig, metadata={"doc": "Camera"})
    trigger: TriggerConfig = field(default_factory=TriggerConfig, metadata={"doc": "Trigger"})
    decision: DecisionConfig = field(default_factory=DecisionConfig, metadata={"doc": "Decision"})
    actuator: ActuatorConfig = field(default_factory=ActuatorConfig, metadata={"doc": "Actuator"})
    journal: JournalConfig = field(default_factory=JournalConfig, metadata={"doc": "Journal"})
    samples: SamplesConfig = field(default_factory=SamplesConfig, metadata={"doc": "Samples"})
    host: HostConfig = field(default_factory=HostConfig, metadata={"doc": "Host collector"})
    update: UpdateConfig = field(default_factory=UpdateConfig, metadata={"doc": "Updates"})
    plc: PlcConfig = field(default_factory=PlcConfig, metadata={"doc": "PLC handshake"})
    metrics: MetricsConfig = field(default_factory=MetricsConfig, metadata={"doc": "Metrics"})
    results: list[str] = field(
        default_factory=list,
        metadata={
            "doc": "Where verdicts go besides the actuator (the trigger's own server always "
            "answers its parts)",
            "choices": RESULT_SINKS,
        },
    )
    source: str | None = field(default=None, metadata={"internal": True})

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source", None)
        return d


_ENV_OVERRIDES = {
    "EDGE_BUNDLE": ("bundle", "path"),
    "EDGE_JOURNAL_DIR": ("journal", "dir"),
    "EDGE_CAMERA_TYPE": ("camera", "type"),
    "EDGE_TRIGGER_TYPE": ("trigger", "type"),
    "EDGE_ACTUATOR_TYPE": ("actuator", "type"),
    "EDGE_RUNTIME_TYPE": ("runtime", "type"),
    "EDGE_PIN_FACTORY": ("trigger", "pin_factory"),
}


def _apply_env(data: dict[str, Any], env: dict[str, str]) -> None:
    for var, (section, key) in _ENV_OVERRIDES.items():
        if env.get(var):
            sec = data.setdefault(section, {})
            if not isinstance(sec, dict):
                continue  # the validator reports the malformed section
            value = env[var]
            if var in ("EDGE_BUNDLE", "EDGE_JOURNAL_DIR"):
                value = str(Path(value).expanduser().resolve())  # relative to the shell's cwd
            sec[key] = value
            if var == "EDGE_PIN_FACTORY":
                data.setdefault("actuator", {})["pin_factory"] = env[var]


def _check(cfg: AgentConfig) -> None:
    """Rules that span several keys."""
    used: dict[int, str] = {}
    for key, pin, on in (
        ("trigger.pin", cfg.trigger.pin, cfg.trigger.type == "gpio"),
        ("actuator.pin", cfg.actuator.pin, cfg.actuator.type == "gpio"),
        ("update.lock_pin", cfg.update.lock_pin, cfg.update.enabled),
    ):
        if pin is None or not on:
            continue
        n = gpio_number(pin, key)
        if n in used:
            raise ConfigError(f"config: {key}: {pin!r} is GPIO{n}, already used by {used[n]}; "
                              "one pin, one job")
        used[n] = key
    if cfg.camera.type == "replay" and not cfg.camera.path:
        raise ConfigError("config: camera.path: required when camera.type is replay")
    if cfg.trigger.type == "gpio" and cfg.trigger.pin is None:
        raise ConfigError("config: trigger.pin: required when trigger.type is gpio")
    if cfg.actuator.type == "gpio" and cfg.actuator.pin is None:
        raise ConfigError("config: actuator.pin: required when actuator.type is gpio")
    if "modbus-client" in cfg.results and not cfg.plc.modbus.plc_host:
        raise ConfigError("config: plc.modbus.plc_host: required when results has modbus-client")
    if cfg.host.token and cfg.host.token_file:
        raise ConfigError("config: host.token: give token or token_file, not both")
    if cfg.host.url and not (cfg.host.token or cfg.host.token_file):
        raise ConfigError("config: host.token_file: set token or token_file to sync with the host")
    if cfg.update.enabled and not cfg.host.url:
        raise ConfigError("config: update.enabled: needs host.url")
    if cfg.camera.retry_backoff_max_s < cfg.camera.retry_backoff_s:
        raise ConfigError(
            "config: camera.retry_backoff_max_s: must be ≥ camera.retry_backoff_s "
            f"({cfg.camera.retry_backoff_s}), got {cfg.camera.retry_backoff_max_s}"
        )


def from_dict(
    data: Any, base: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None
) -> AgentConfig:
    """Validate a parsed config mapping (env overrides applied); paths resolved from ``base``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config: top level: must be a mapping, got {type(data).__name__}")
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    _apply_env(data, dict(os.environ) if env is None else env)
    cfg = build(AgentConfig, data, "", Path(base) if base is not None else Path.cwd())
    if not cfg.device_id:
        cfg.device_id = socket.gethostname()
    _check(cfg)
    return cfg


MAX_CONFIG_BYTES = 1024**2


def config_warnings(cfg: AgentConfig) -> list[str]:
    """Settings that validate but cannot work on a line: said by ``validate-config`` and
    logged by ``run`` (one line each)."""
    out = []
    ac = cfg.actuator
    if ac.type == "gpio" and ac.delay_ms < 1.0:
        out.append(f"actuator.delay_ms {ac.delay_ms:g}: no decision can be ready before its "
                   "pulse should start, so the rejector never fires (every part a deadline "
                   "miss); set the conveyor's travel time from camera to rejector")
    if ac.type == "gpio" and cfg.trigger.type == "interval" and cfg.trigger.rate_hz > 0:
        interval_ms = 1000.0 / cfg.trigger.rate_hz
        if ac.pulse_ms >= interval_ms:
            out.append(f"actuator.pulse_ms {ac.pulse_ms:g}: not shorter than the item interval "
                       f"({interval_ms:.4g} ms at trigger.rate_hz {cfg.trigger.rate_hz:g}): a "
                       "reject also pushes the next part")
    return out


def load_config(path: str | os.PathLike[str], env: dict[str, str] | None = None) -> AgentConfig:
    """Read and validate a YAML config file; raise ``ConfigError`` naming the key path."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config: {p}: over {MAX_CONFIG_BYTES} bytes (not an agent config)")
        text = p.read_text()
    except FileNotFoundError as err:
        raise ConfigError(f"config: {p}: no such file") from err
    except OSError as err:
        raise ConfigError(f"config: {p}: cannot read ({err.strerror})") from err
    try:
        data = yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "not valid YAML"
        raise ConfigError(f"config: {p}: invalid YAML{where}: {problem}") from err
    except RecursionError as err:
        raise ConfigError(f"config: {p}: invalid YAML: nested too deeply") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"config: {p}: not UTF-8 text") from err
    cfg = from_dict(data, base=p.resolve().parent, env=env)
    cfg.source = str(p.resolve())
    return cfg
