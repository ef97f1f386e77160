"""The synthetic camera: parts on a conveyor from ``edge_common.synthetic``, with truth.

Deterministic in ``(seed, index)``, so a laptop run reports live accuracy against the
ground truth the generator knows.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from edge_agent.camera import Frame

if TYPE_CHECKING:
    from edge_agent.config import CameraConfig


class SyntheticCamera:
    """Renders frame ``i`` of the synthetic inspection set on each ``read()``."""

    name = "synthetic"

    def __init__(self, cfg: CameraConfig, labels: Sequence[str] = ()) -> None:
        self.seed = cfg.seed
        self.size = cfg.size
        self.difficulty = cfg.difficulty
        self.index = 0
        self._render: Any = None  # edge_common.synthetic.render, imported at open()
        self._labels: tuple[str, ...] = ()

    def open(self) -> None:
        from edge_common import synthetic

        self._render = synthetic.render
        self._labels = tuple(synthetic.LABELS)

    def read(self) -> Frame:
        assert self._render is not None, "open() first"
        kw = {} if self.difficulty is None else {"difficulty": self.difficulty}
        image, label = self._render(self.index, self.seed, self.size, **kw)
        t = time.monotonic_ns()
        self.index += 1
        return Frame(image, t, self._labels[int(label)])

    def close(self) -> None:
        self._render = None
