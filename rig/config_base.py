"""The strict pydantic base every config model uses (unknown keys refused, frozen)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class CameraOptions(Strict):
    """``rig.cameras.<name>.options``: the settings only one backend has. Each backend module under
    ``rig/cameras/`` subclasses this with the keys it reads (``options_model`` on its camera class);
    ``rig.config.CameraConfig`` validates ``options`` against the model of the camera's ``backend``."""
