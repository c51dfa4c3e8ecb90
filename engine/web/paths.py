"""The webhook's paths: what the dispatchers publish to and the routes answer (a leaf, imported by both)."""

from __future__ import annotations

STEP_PATH = "/v1/step"
FAILED_PATH = "/v1/step/failed"
CALLBACK_PATH = "/v1/step/callback"

__all__ = ["CALLBACK_PATH", "FAILED_PATH", "STEP_PATH"]
