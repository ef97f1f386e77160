"""`--device auto|cpu|cuda|mps`: selection (accelerators faked by patching torch's own
availability checks), the CPU path for real, the device as a parameter, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from edge_common import cpuinfo
from edge_common.errors import ConfigError
from edgectl.cli import main
from edgectl.pipeline import compute
from edgectl.pipeline.data import load_datasets
from edgectl.pipeline.model import build_model
from edgectl.pipeline.training import fine_tune, predict, train

ENV = "EDGECTL_DEVICE"   # --device's default, read by click only


@pytest.fixture(autouse=True)
def _fresh_default(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)


def _have(monkeypatch, cuda: bool, mps: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize(("cuda", "mps", "picked"), [
    (True, True, "cuda"), (False, True, "mps"), (False, False, "cpu"), (True, False, "cuda"),
])
def test_auto_picks_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, picked):
    _have(monkeypatch, cuda, mps)
    assert compute.resolve("auto").type == picked
    assert compute.resolve(None).type == picked  # the default is auto


@pytest.mark.parametrize("spec", ["cuda", "cuda:1", "mps"])
def test_a_missing_accelerator_is_an_error_not_a_silent_cpu_run(monkeypatch, spec):
    _have(monkeypatch, False, False)
    with pytest.raises(ConfigError, match=f"--device {spec.split(':')[0]}"):
        compute.resolve(spec)
    assert compute.resolve("cpu").type == "cpu"


def test_unknown_device_names_the_choices():
    with pytest.raises(ConfigError, match="auto, cpu, cuda, mps"):
        compute.resolve("tpu")


def test_the_device_is_a_parameter_not_process_state(monkeypatch):
    """The pipeline never reads $EDGECTL_DEVICE (only --device's click default does): the
    device travels in BuildConfig/StudyConfig and as training's ``device=``."""
    from edgectl.pipeline.build import BuildConfig
    from edgectl.study.grid import StudyConfig

    _have(monkeypatch, True, False)
    monkeypatch.setenv(ENV, "cpu")
    assert compute.resolve(None).type == "cuda"  # not told: auto, whatever the environment
    assert compute.resolve("cpu").type == "cpu"
    assert BuildConfig(data=None, out=Path("o")).device == "auto"
    assert StudyConfig(out=Path("o")).device == "auto"


def test_cuda_plan_uses_mixed_precision_and_spare_cores(monkeypatch):
    _have(monkeypatch, True, False)
    monkeypatch.setattr(compute, "cores", lambda: 8)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    p = compute.plan("cuda")
    assert p.amp_dtype is torch.bfloat16 and not p.scaled  # bf16: no loss scaling
    assert p.channels_last and p.pin_memory and p.workers == 7
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    p = compute.plan("cuda")
    assert p.amp_dtype is torch.float16 and p.scaled  # fp16: GradScaler on
    assert compute.plan("cuda", amp=False).amp_dtype is None
    assert compute.plan("cuda", channels_last=False).channels_last is False


def test_cpu_plan_is_float32_without_workers():
    p = compute.plan("cpu")
    assert p.amp_dtype is None and p.workers == 0 and not p.pin_memory
    assert p.channels_last is compute.CPU_CHANNELS_LAST
    assert p.grad_scaler().is_enabled() is False  # same training code, scaling a no-op
    assert p.describe()["precision"] == "float32"


def test_training_runs_on_the_given_device_and_returns_a_cpu_model(tiny_data_config):
    ds = load_datasets(tiny_data_config)
    torch.manual_seed(0)
    model = build_model(len(ds.labels), width_mult=0.25)
    before = [p.detach().clone() for p in model.parameters()]
    hist = train(model, ds, epochs=1, batch_size=16, progress=False, eval_each_epoch=False,
                 device="cpu")
    assert hist["config"]["device"] == "cpu" and hist["config"]["precision"] == "float32"
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert not model.training
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous()  # back in the default format for export
    hist = fine_tune(model, ds, epochs=1, batch_size=16, progress=False, device="cpu",
                     channels_last=False)
    assert hist["config"]["channels_last"] is False and "test_accuracy" in hist["epochs"][0]
    pred, true = predict(model, ds.test)
    assert pred.device.type == "cpu" and len(pred) == len(true) == len(ds.test)


def test_the_fine_tune_hook_trains_where_it_is_told(monkeypatch, tiny_data_config):
    """build, prune and the study hand their device to fine_tune_hook: it reaches training
    (a CUDA request on a machine without one fails there, not silently on the CPU)."""
    from edgectl.pipeline.training import fine_tune_hook

    _have(monkeypatch, False, False)
    ds = load_datasets(tiny_data_config)
    model = build_model(len(ds.labels), width_mult=0.25)
    with pytest.raises(ConfigError, match="--device cuda"):
        fine_tune_hook(ds, 1, batch_size=16, progress=False, device="cuda")(model, None)
    assert fine_tune_hook(ds, 1, batch_size=16, progress=False, device="cpu",
                          measure=True)(model, None) is not None


def test_banner_names_device_cpu_model_isa_and_threads():
    line = compute.banner("cpu")
    assert line.startswith("compute: cpu; CPU ")
    assert cpuinfo.cpu_model() in line and "threads on" in line
    assert torch.backends.cpu.get_cpu_capability() in line


X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse sse2 avx fma avx2 avx512f avx512_vnni avx512_bf16
processor\t: 1
model name\t: ignored second core
"""
PI = """processor\t: 0
Features\t: fp asimd evtstrm crc32 cpuid
Hardware\t: BCM2835
Model\t\t: Raspberry Pi 4 Model B Rev 1.5
"""


def test_cpuinfo_reads_model_and_isa_of_x86_and_arm():
    assert cpuinfo.cpu_model(X86) == "AMD EPYC 9R14"
    assert cpuinfo.isa_flags(X86) == ["avx512_bf16", "avx512_vnni", "avx512f", "avx2", "fma"]
    assert cpuinfo.cpu_model(PI) == "Raspberry Pi 4 Model B Rev 1.5"
    assert cpuinfo.isa_flags(PI) == ["asimd"]
    assert cpuinfo.cpu_model("") != ""  # platform fallback, never empty


@pytest.mark.parametrize("command", ["train", "prune", "build", "study"])
def test_long_commands_offer_device(cli_runner, command):
    res = cli_runner.invoke(main, [command, "--help"])
    assert res.exit_code == 0
    assert "--device auto|cpu|cuda|mps" in res.output and "EDGECTL_DEVICE" in res.output


def test_cli_fails_closed_on_a_missing_gpu_before_any_work(cli_runner, monkeypatch, tmp_path):
    _have(monkeypatch, False, False)
    out = tmp_path / "run"
    res = cli_runner.invoke(main, ["train", "--device", "cuda", "--epochs", "1",
                                   "--train-size", "16", "--out", str(out)])
    assert res.exit_code == 1 and "--device cuda: no CUDA device" in res.output
    assert not out.exists()
    res = cli_runner.invoke(main, ["build", "--device", "tpu", "--out", str(out)])
    assert res.exit_code == 2 and "auto, cpu, cuda, mps" in res.output


def test_train_cli_prints_the_banner_and_trains_on_cpu(cli_runner, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, "cpu")  # flags win over it; the env var is the default
    res = cli_runner.invoke(main, ["train", "--epochs", "1", "--train-size", "32",
                                   "--test-size", "16", "--img-size", "32", "--width-mult",
                                   "0.25", "--batch-size", "16", "--train-threads", "1",
                                   "--out", str(tmp_path / "run"), "--json"])
    assert res.exit_code == 0, res.output
    assert "compute: cpu; CPU " in res.stderr
    result = json.loads(res.stdout)
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["train"]["device"] == "cpu"
    assert result["checkpoint"].endswith("model.pt")
