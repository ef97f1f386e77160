"""Training loop: Adam with a one-cycle learning rate (OneCycleLR: a short warm-up, then
cosine decay), cross-entropy, progress bar.

``train`` builds the baseline; ``fine_tune`` is the same loop with a smaller learning
rate and an ``after_step(model)`` hook, which pruning uses to re-apply its masks after
every optimizer step. Runs are deterministic for a given seed on the CPU: the global
torch RNG (init, dropout, augmentation) is seeded and the DataLoader shuffles with its
own seeded generator.

Device, precision, memory format and loader workers come from ``compute.plan``: the
device is ``device=`` (the CLI's ``--device``; default auto: CUDA,
then MPS, then CPU); CUDA trains in mixed precision; ``channels_last`` where measured
faster (benchmarks/results/compute.md). The model is returned on the CPU in the default
contiguous format, so pruning, checkpoints, exports and evaluation see an ordinary model.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from edgectl.pipeline import compute
from edgectl.pipeline.data import Datasets, Samples

AfterStep = Callable[[nn.Module], None]

DEFAULT_EPOCHS = 8
DEFAULT_BATCH_SIZE = 64
DEFAULT_LR = 2e-3
FINE_TUNE_LR = 1e-3  # half the training peak: recovers structured pruning far faster than 2e-4


def _loader(dataset: Samples, batch_size: int, shuffle: bool, seed: int = 0,
            workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """Batches of ``dataset``; ``workers``/``pin_memory`` from ``compute.plan`` (0 on the CPU:
    frames are cached in memory and the transforms cheap, so worker processes would only
    take cores from the training threads; on an accelerator they fill the spare cores)."""
    gen = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=gen,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        drop_last=shuffle and len(dataset) > batch_size,
    )


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def predict(
    model: nn.Module, dataset: Samples, batch_size: int = 128
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted and true labels over ``dataset`` (model in eval mode, on its own device;
    the labels come back on the CPU)."""
    was_training = model.training
    model.eval()
    dev = _model_device(model)
    preds, targets = [], []
    for x, y in _loader(dataset, batch_size, shuffle=False):
        preds.append(model(x.to(dev, non_blocking=True)).argmax(1).cpu())
        targets.append(y)
    model.train(was_training)
    if not preds:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.cat(preds), torch.cat(targets)


def accuracy(model: nn.Module, dataset: Samples, batch_size: int = 128) -> float:
    """Top-1 accuracy (fraction 0–1) of ``model`` on ``dataset``."""
    pred, true = predict(model, dataset, batch_size)
    return float((pred == true).float().mean()) if len(true) else 0.0


def fit(
    model: nn.Module,
    datasets: Datasets,
    epochs: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    seed: int = 0,
    progress: bool = True,
    after_step: AfterStep | None = None,
    eval_each_epoch: bool = True,
    weight_decay: float = 0.0,
    channels_last: bool | None = None,
    desc: str = "train",
    device: str | torch.device | None = None,
    amp: bool = True,
) -> dict[str, Any]:
    """Train ``model`` in place on ``datasets.train``; return the history. The model ends on
    the CPU in eval mode whatever ``device`` it trained on.

    ``device``: ``auto|cpu|cuda|mps`` or a ``torch.device`` (default auto: CUDA, MPS, CPU);
    ``channels_last``/``amp`` override the device's plan.

    History: ``{"config": {...}, "epochs": [{"epoch", "loss", "train_accuracy",
    "test_accuracy", "seconds", "images_per_s"}], "seconds", "images_per_s"}``.
    """
    from tqdm.auto import tqdm

    if epochs < 0 or batch_size <= 0 or lr <= 0:
        raise ValueError(
            f"bad training settings: epochs={epochs}, batch_size={batch_size}, lr={lr}"
        )
    torch.manual_seed(seed)
    run = compute.plan(device, channels_last=channels_last, amp=amp)
    dev, channels_last = run.device, run.channels_last
    loader = _loader(datasets.train, batch_size, shuffle=True, seed=seed,
                     workers=run.workers, pin_memory=run.pin_memory)
    steps_total = max(1, epochs * len(loader))
    model.to(dev)  # before the optimizer, so it holds the parameters on the device
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    # One-cycle: short warm-up then cosine decay; from scratch it learns markedly faster
    # than a plain cosine from the peak (measured on the synthetic set, docs/dataset.md).
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=steps_total + 1, pct_start=0.15
    )
    loss_fn = nn.CrossEntropyLoss()
    scaler = run.grad_scaler()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    history: dict[str, Any] = {
        "config": {
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "optimizer": "adam",
            "schedule": "onecycle",
            "weight_decay": weight_decay,
            "channels_last": channels_last,
            "threads": torch.get_num_threads(),
            **{k: v for k, v in run.describe().items() if k != "channels_last"},
        },
        "epochs": [],
    }
    t_start = time.perf_counter()
    seen_total = 0
    for epoch in range(1, epochs + 1):
        model.train()
        t0 = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(
            loader, desc=f"{desc} {epoch}/{epochs}", unit="batch", leave=False, disable=not progress
        )
        for x, y in bar:
            x = _to_memory_format(x.to(dev, non_blocking=True), channels_last)
            y = y.to(dev, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            with run.autocast():
                out = model(x)
                loss = loss_fn(out, y)
            scaler.scale(loss).backward()  # a pass-through unless float16 needs scaling
            scaler.step(opt)
            scaler.update()
            sched.step()
            if after_step is not None:
                after_step(model)
            n = len(y)
            loss_sum += float(loss.detach()) * n
            correct += int((out.argmax(1) == y).sum())
            seen += n
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        bar.close()
        dt = time.perf_counter() - t0
        seen_total += seen
        row = {
            "epoch": epoch,
            "loss": loss_sum / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            "seconds": dt,
            "images_per_s": seen / dt if dt else 0.0,
        }
        if eval_each_epoch:
            row["test_accuracy"] = accuracy(model, datasets.test)
        history["epochs"].append(row)
        if progress:
            msg = (
                f"{desc} epoch {epoch}/{epochs}: loss {row['loss']:.3f}, "
                f"train acc {row['train_accuracy']:.3f}"
            )
            if "test_accuracy" in row:
                msg += f", test acc {row['test_accuracy']:.3f}"
            tqdm.write(msg + f" ({row['images_per_s']:.0f} img/s)", file=sys.stderr)
    total = time.perf_counter() - t_start
    history["seconds"] = total
    history["images_per_s"] = seen_total / total if total else 0.0
    model.to("cpu").to(memory_format=torch.contiguous_format).eval()
    return history


def train(
    model: nn.Module,
    datasets: Datasets,
    epochs: int = DEFAULT_EPOCHS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    seed: int = 0,
    progress: bool = True,
    device: str | torch.device | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """Train the baseline from its initial weights on ``device`` (default auto); returns
    the history (see :func:`fit`) and leaves the model on the CPU."""
    return fit(model, datasets, epochs, batch_size, lr, seed, progress, desc="train",
               device=device, **kw)


def fine_tune(
    model: nn.Module,
    datasets: Datasets,
    epochs: int = 1,
    lr: float = FINE_TUNE_LR,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = 0,
    progress: bool = True,
    after_step: AfterStep | None = None,
    device: str | torch.device | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """Recover accuracy after pruning: the same loop, smaller lr, ``after_step`` hook, on
    ``device`` (default auto); the model comes back on the CPU."""
    return fit(
        model,
        datasets,
        epochs,
        batch_size,
        lr,
        seed,
        progress,
        after_step=after_step,
        desc="fine-tune",
        device=device,
        **kw,
    )


@torch.no_grad()
def recalibrate_bn(model: nn.Module, dataset: Samples, batches: int = 32,
                   batch_size: int = DEFAULT_BATCH_SIZE, seed: int = 0) -> int:
    """Adaptive batch normalization (EagleEye, Li et al., ECCV 2020): forget every batch-norm
    layer's running statistics and estimate them again from ``batches`` training batches
    (train mode, no gradient, a cumulative average), then leave the model in eval mode.
    A pruned network's activations no longer match the statistics its BN layers kept;
    EagleEye shows accuracy after this correlates with accuracy after fine-tuning far
    better than the raw pruned accuracy does, at the cost of a few forward passes.
    Returns the number of images seen."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    saved = [(m, m.momentum) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None          # cumulative moving average over the batches below
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    model.train()
    seen = 0
    try:
        for i, (x, _y) in enumerate(loader):
            if i >= batches:
                break
            model(x.to(_model_device(model)))
            seen += len(x)
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        model.eval()
    return seen


PruneHook = Callable[[nn.Module, Callable[[], None] | None], float | None]


def fine_tune_hook(
    datasets: Datasets,
    epochs: float = 1,
    *,
    lr: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = 0,
    progress: bool = True,
    chunks: list[list[int]] | None = None,
    measure: bool = False,
    device: str | None = None,
) -> PruneHook:
    """The one fine-tune hook ``pruning.prune_model`` calls after every pruning step.

    ``hook(model, reapply)`` fine-tunes ``model`` in place, calling ``reapply()`` (pruning's
    mask re-application) after every optimizer step, and returns the test accuracy or None.
    - Default: ``epochs`` epochs over the whole training set (``build``, ``prune``); with
      ``epochs == 0`` it trains nothing and returns None, or measures the test accuracy
      when ``measure`` is set (``prune`` reports accuracy after every step).
    - ``chunks``: step k trains one pass over the training indices ``chunks[k]`` with seed
      ``seed + 1000·k`` and reports nothing (the study spreads a fine-tune budget over the
      steps of an iterative schedule).
    ``device``: where the fine-tunes train (default auto, ``compute.resolve``).
    """
    import dataclasses

    from torch.utils.data import Subset

    rate = lr or FINE_TUNE_LR
    step = {"k": 0}

    def hook(model: nn.Module, reapply: Callable[[], None] | None) -> float | None:
        after = (lambda _m: reapply()) if reapply is not None else None
        if chunks is not None:
            k = step["k"]
            step["k"] += 1
            part = dataclasses.replace(datasets, train=Subset(datasets.train, chunks[k]))
            fine_tune(model, part, epochs=1, lr=rate, batch_size=batch_size, device=device,
                      seed=seed + 1000 * k, progress=False, after_step=after,
                      eval_each_epoch=False)
            return None
        if epochs > 0:
            hist = fine_tune(model, datasets, epochs=int(epochs), lr=rate, batch_size=batch_size,
                             device=device,
                             seed=seed, progress=progress, after_step=after)
            last = (hist.get("epochs") or [{}])[-1]
            if last.get("test_accuracy") is not None:
                return float(last["test_accuracy"])
        return float(accuracy(model.eval(), datasets.test)) if measure else None

    return hook
