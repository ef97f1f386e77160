"""Request and response bodies of the collector API: one strict pydantic model per body.

Strict types (no coercion), finite numbers, bounded strings, lists, maps and nesting
(``fields``); a body that breaks one is a 422 whose ``detail[].loc`` names the field.
Bodies a board sends (heartbeat, decision records, update reports) keep keys a newer
agent adds, as bounded JSON; the admin's bodies refuse unknown keys.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

from edgectl.collector.api.fields import (
    OPEN,
    STRICT,
    Count,
    Finite,
    Int64,
    Json,
    Key,
    Name,
    NonNeg,
    Text,
    Timestamp,
)

MAX_STAGES = 16  # latency stages (capture, preprocess, inference, decision, total, ...)
MAX_BUCKETS = 64  # histogram bounds
MAX_FAULTS = 64
MAX_EXTRA = 64  # keys a board may add to a body beyond the ones named here
MAX_CLASSES = 1024  # entries of a record's ``probs``


class _Open(BaseModel):
    """A board's body: named fields typed, other keys kept as bounded JSON."""

    model_config = OPEN
    __pydantic_extra__: dict[str, Json] = Field(init=False)

    @model_validator(mode="before")
    @classmethod
    def _few_keys(cls, v: Any) -> Any:
        if isinstance(v, dict) and len(v) > MAX_EXTRA + 32:  # named fields are fewer than 32
            raise ValueError(f"more than {MAX_EXTRA + 32} keys")
        return v


class Percentiles(_Open):
    """One stage's latency in milliseconds (``Stats.latency_ms``)."""

    p50: NonNeg | None = None
    p95: NonNeg | None = None
    p99: NonNeg | None = None


class LatencyHistogram(BaseModel):
    """``latency_hist_ms``: Prometheus' cumulative form (bounds in ms, counts at or under
    each, the total count and sum)."""

    model_config = STRICT
    le: Annotated[list[NonNeg], Field(max_length=MAX_BUCKETS)]
    counts: Annotated[list[Count], Field(max_length=MAX_BUCKETS)]
    count: Count
    sum: NonNeg

    @model_validator(mode="after")
    def _cumulative(self) -> LatencyHistogram:
        if len(self.le) != len(self.counts):
            raise ValueError("le and counts must have the same length")
        if self.le != sorted(self.le) or self.counts != sorted(self.counts) or \
                (self.counts and self.counts[-1] > self.count):
            raise ValueError("not cumulative: bounds and counts must rise, up to count")
        return self


class Counts(_Open):
    """The board journal's lifetime counters and current backlog (``Journal.counts``),
    and this run's decisions by kind (``run``)."""

    __pydantic_extra__: dict[str, Count] = Field(init=False)
    total: Count | None = None
    ok: Count | None = None
    reject: Count | None = None
    review: Count | None = None
    deadline_misses: Count | None = None
    unsent: Count | None = None
    rows: Count | None = None
    pending: Count | None = None
    quarantined: Count | None = None
    run: Annotated[dict[Key, Count], Field(max_length=MAX_STAGES)] | None = None


class Heartbeat(_Open):
    """``Agent.snapshot()``: what the board reports about itself."""

    device_id: Name | None = None
    model_version: Text | None = None
    state: Text | None = None
    updated: Timestamp | None = None
    uptime_s: NonNeg | None = None
    items: Count | None = None
    fps: NonNeg | None = None
    latency_ms: Annotated[dict[Key, Percentiles], Field(max_length=MAX_STAGES)] | None = None
    latency_hist_ms: LatencyHistogram | None = None
    deadline_misses: Count | None = None
    counts: Counts | None = None
    accuracy: Annotated[float, Field(ge=0, le=1)] | None = None
    disk_bytes: Count | None = None
    faults: Annotated[dict[Key, Text | bool], Field(max_length=MAX_FAULTS)] | None = None
    temperature_c: Annotated[float, Field(ge=-273.15, le=1000)] | None = None


class DecisionRecord(_Open):
    """One journal row; ``id`` is its unique id (the idempotence key)."""

    id: Name
    device_id: Name | None = None
    seq: Count | None = None
    ts: Timestamp | None = None
    t_trigger_ns: Int64 | None = None
    item: Int64 | Text | None = None
    label: Text | None = None
    score: Finite | None = None
    reject_score: Finite | None = None
    probs: Annotated[dict[Key, Finite], Field(max_length=MAX_CLASSES)] | None = None
    decision: Key | None = None
    action: Text | None = None
    error: Text | None = None
    truth: Text | None = None
    model_version: Text | None = None
    latency_ms: Annotated[dict[Key, NonNeg | None], Field(max_length=MAX_STAGES)] | None = None
    deadline_missed: bool | None = None


class DecisionBatch(BaseModel):
    """Journal rows of one device (the handler also bounds their number)."""

    model_config = STRICT
    device_id: Name | None = None
    records: list[DecisionRecord]


class BatchResult(BaseModel):
    received: int
    accepted: int
    duplicates: int


class UpdateReport(_Open):
    """A board's outcome for one update attempt; ``id`` makes repeats harmless."""

    id: Name
    version: Text | None = None
    outcome: Literal["applied", "refused", "rolled_back"]
    reason: Text | None = None
    previous_version: Text | None = None
    ts: Timestamp | None = None


class NewDevice(BaseModel):
    model_config = STRICT
    name: Name
    group: Name | None = None


class DesiredModel(BaseModel):
    model_config = STRICT
    version: Name
    allow_downgrade: bool = False


# -- what the models page reads of a bundle's manifest (checked at upload) ---------------


class _ArtifactMetrics(_Open):
    accuracy: Finite | None = None
    latency_ms: Percentiles | None = None


class _Artifact(_Open):
    path: Text | None = None
    bytes: Count | None = None
    metrics: _ArtifactMetrics | None = None


class _Metrics(_Open):
    accuracy: Finite | None = None
    sparsity: Finite | None = None


class ShownManifest(_Open):
    """The manifest fields the models page shows: numbers where it shows numbers. The
    board checks the rest (``edge_common.bundle``); the collector checks only these."""

    name: Text | None = None
    metrics: _Metrics | None = None
    baseline: _Metrics | None = None
    artifacts: Annotated[list[_Artifact], Field(max_length=64)] | None = None
    deployable: bool | None = None
