"""Request and response bodies of the collector API (pydantic)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from edgectl.collector.names import check_name


def _safe(value: str, what: str) -> str:
    return check_name(value, what)


class Heartbeat(BaseModel):
    """``Agent.snapshot()``: what the board reports about itself."""

    model_config = ConfigDict(extra="allow")
    device_id: str | None = None
    model_version: str | None = None
    uptime_s: float | None = None
    fps: float | None = None
    latency_ms: dict[str, Any] | None = None
    deadline_misses: int | None = None
    counts: dict[str, Any] | None = None
    disk_bytes: int | None = None
    temperature_c: float | None = None


class DecisionRecord(BaseModel):
    """One journal row; ``id`` is its unique id (the idempotence key)."""

    model_config = ConfigDict(extra="allow")
    id: str

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return _safe(v, "record id")


class DecisionBatch(BaseModel):
    """Journal rows; each needs a safe unique ``id`` (checked in the handler: validating
    plain dicts is several times cheaper than a model per record, the hot path)."""

    device_id: str | None = None
    records: list[dict[str, Any]]


class BatchResult(BaseModel):
    received: int
    accepted: int
    duplicates: int


class UpdateReport(BaseModel):
    """A board's outcome for one update attempt; ``id`` makes repeats harmless."""

    model_config = ConfigDict(extra="allow")
    id: str
    version: str | None = None
    outcome: Literal["applied", "refused", "rolled_back"]
    reason: str | None = None
    previous_version: str | None = None
    ts: float | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return _safe(v, "report id")


class NewDevice(BaseModel):
    name: str
    group: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _safe(v, "device name")

    @field_validator("group")
    @classmethod
    def _group(cls, v: str | None) -> str | None:
        return None if v is None else _safe(v, "group name")


class DesiredModel(BaseModel):
    version: str
    allow_downgrade: bool = False

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        return _safe(v, "bundle version")
