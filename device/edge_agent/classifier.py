"""A verified model, ready to classify frames.

Loads the bundle through ``edge_common.bundle`` (every file's sha256, the signature when a
public key is configured), refuses bundles marked not deployable, opens the chosen
artifact with ``edge_common.runtime`` and replays the bundle's test vectors before it
serves a single frame, on that artifact and on every other one this board could fall back
to. Preprocessing is the manifest's, through ``edge_common.preprocess``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_common.bundle import Artifact, Bundle, load_bundle
from edge_common.errors import BundleError, MissingExtraError, one_line
from edge_common.preprocess import preprocess, softmax
from edge_common.runtime import Session, open_session

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scores:
    """Class probabilities of one frame and what they cost."""

    probs: np.ndarray
    preprocess_ms: float
    inference_ms: float


def check_other_artifacts(bundle: Bundle, served: Artifact, threads: int = 1) -> list[str]:
    """Replay the test vectors on every other deployable artifact this board could serve
    (its runtime installed): a bundle whose fallback is broken is refused before it serves,
    not when the board falls back to it. Returns the paths checked; an artifact whose
    runtime is missing here is skipped (this board cannot serve it)."""
    checked = []
    for a in bundle.artifacts:
        if a is served or not a.deployable:
            continue
        try:
            session = open_session(bundle.artifact_path(a), a.format, threads)
        except MissingExtraError:
            continue
        bundle.check_test_vectors(session, a)
        checked.append(a.path)
    return checked


class Classifier:
    """A bundle's artifact in a runtime session; ``classify(frame) -> Scores``."""

    def __init__(self, bundle: Bundle, artifact: Artifact, session: Session) -> None:
        self.bundle = bundle
        self.artifact = artifact
        self.session = session
        self.labels = bundle.labels
        self.reject_labels = bundle.reject_labels
        self.input_spec = bundle.input_spec
        self.version = bundle.version
        self.check: dict[str, Any] = {}
        self.others: list[str] = []

    @classmethod
    def load(
        cls,
        path: str,
        public_key: str | None = None,
        fmt: str = "onnx",
        precision: str | None = None,
        threads: int = 1,
    ) -> Classifier:
        """Load, verify, open and self-test; raises BundleError/ModelError naming the fault."""
        bundle = load_bundle(path, public_key=public_key)
        try:
            if not bundle.deployable:
                raise BundleError(
                    f"bundle {bundle.name}@{bundle.version}: marked not deployable "
                    f"(built below its accuracy gate)"
                )
            artifact = bundle.select_artifact(fmt, precision)
            session = open_session(bundle.artifact_path(artifact), artifact.format, threads)
            self = cls(bundle, artifact, session)
            self.check = bundle.check_test_vectors(session, artifact)
            self.others = check_other_artifacts(bundle, artifact, threads)
            self._smoke_test()
        except BaseException:
            bundle.close()
            raise
        log.info(
            "model %s@%s %s/%s verified (%d test vectors, max diff %.2g)",
            bundle.name,
            bundle.version,
            artifact.format,
            artifact.precision,
            self.check.get("count", 0),
            self.check.get("max_abs_diff", 0.0),
        )
        return self

    def _smoke_test(self) -> None:
        """One grey frame through preprocess and the session, as the line will do it: a
        spec the model cannot take is refused at load, not on every part."""
        grey = np.full((self.input_spec.size, self.input_spec.size, 3), 128, np.uint8)
        try:
            probs = self.classify(grey).probs
        except Exception as err:  # noqa: BLE001 - the runtime's own errors, one line
            raise BundleError(
                f"bundle {self.bundle.name}@{self.version}: {self.artifact.path} cannot "
                f"classify a frame made by its input spec: {one_line(err)}") from err
        if probs.shape != (len(self.labels),):
            raise BundleError(
                f"bundle {self.bundle.name}@{self.version}: {self.artifact.path} gives "
                f"{probs.shape[0]} scores for {len(self.labels)} labels")

    def classify(self, image: np.ndarray) -> Scores:
        t0 = time.perf_counter_ns()
        x = preprocess(image, self.input_spec, source_order="RGB")
        t1 = time.perf_counter_ns()
        logits = self.session.run(x)
        t2 = time.perf_counter_ns()
        probs = softmax(np.asarray(logits, dtype=np.float32).reshape(1, -1))[0]
        return Scores(probs, (t1 - t0) / 1e6, (t2 - t1) / 1e6)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.bundle.name,
            "version": self.version,
            "artifact": self.artifact.path,
            "format": self.artifact.format,
            "precision": self.artifact.precision,
            "signed": self.bundle.signed,
        }

    def close(self) -> None:
        self.bundle.close()
