"""``GET /health``: liveness, no token needed."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

router = APIRouter(tags=["meta"])


@router.get("/health")
def get_health() -> dict[str, Any]:
    """Liveness, no token needed."""
    return {"ok": True, "api": 1}
