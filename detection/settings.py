"""The detector's settings, owned here: the runner (which model, how it runs) and the online ROI logic.

:class:`DetectorSettings` is what :func:`detection.runners.make_runner` takes; its ``options`` is a
:class:`DetectorOptions`, read by the runners (``input_size``, ``threads``, ...) and by
:class:`detection.online.OnlineDetector` (``roi_size``, ``search_scale``, ...). Unknown keys are refused:
``roi_sise`` is a mistake, not a setting to ignore. The rig's config (``pipeline.detector``) extends
:class:`DetectorSettings` with the rig-only fields (online lag, recorder back-off), so a config file and a
session's ``config.yaml`` validate through these very models.

It never imports ``rig`` (the dependency runs rig -> detection).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from detection.base import DetectionError

__all__ = ["RUNNERS", "DetectorOptions", "DetectorSettings", "settings_error"]

RUNNERS = ("oracle", "onnxruntime", "tensorrt", "ultralytics")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class DetectorOptions(_Strict):
    """``pipeline.detector.options``: how the runner runs the model and how the online ROI logic crops.

    Runner keys apply to the runner named in ``runner`` (``providers`` to ONNX Runtime, ``device`` to
    Ultralytics, ``fp16`` / ``max_batch`` / ``cache_dir`` / ``cpu_fallback`` to TensorRT); the others are
    ignored by the runners that have no such setting."""

    # -- the runner
    input_size: int | None = Field(
        None,
        gt=0,
        le=4096,
        description="letterbox every input to this size (px, a multiple of 32); null: the model's fixed "
        "input size, or native resolution for a dynamic-shape model",
    )
    threads: int = Field(1, ge=1, le=64, description="CPU threads for inference (ONNX Runtime, PyTorch)")
    iou: float = Field(0.5, gt=0, le=1, description="IoU threshold of non-maximum suppression")
    providers: tuple[str, ...] | None = Field(
        None,
        description="ONNX Runtime execution providers, in order (null: CUDA when present, then CPU)",
    )
    device: str = Field("cpu", description="Ultralytics: torch device, e.g. 'cpu' or 'cuda:0'")
    fp16: bool = Field(True, description="TensorRT: build the engine in FP16")
    max_batch: int = Field(
        8, ge=1, le=1024, description="TensorRT: the most images one engine call takes (its build profile)"
    )
    cache_dir: str | None = Field(
        None, description="TensorRT: where built engines are cached (default: .trt-cache next to the model)"
    )
    cpu_fallback: bool = Field(
        True, description="TensorRT: run ONNX Runtime on the CPU (with a loud warning) when no GPU/TensorRT"
    )
    # -- the online ROI logic (detection.online)
    roi_size: int = Field(
        64,
        ge=0,
        le=4096,
        description="side of the native-resolution crop around the predicted paw (px); 0: every frame is a "
        "full-frame search",
    )
    search_scale: float = Field(
        0.5, gt=0, le=1, description="full-frame search on the frame scaled by this when the paw is lost"
    )
    lost_frames: int = Field(
        10, ge=0, description="empty searches in a row before the full-frame search slows to search_every"
    )
    search_every: int = Field(
        4, ge=1, description="while the paw stays lost, search the full frame every this many frames"
    )
    track_class: int | None = Field(
        None, ge=0, description="class whose best box steers the ROI (null: any class)"
    )

    @classmethod
    def from_options(cls, opts: DetectorOptions | Mapping[str, Any] | None) -> DetectorOptions:
        """The options themselves, or validated from a mapping (unknown keys refused: DetectionError)."""
        if isinstance(opts, DetectorOptions):
            return opts
        try:
            return cls.model_validate(dict(opts or {}))
        except ValidationError as exc:
            raise settings_error(exc, "options", cls) from None


class DetectorSettings(_Strict):
    """Which runner and model; what :func:`detection.runners.make_runner` builds a runner from."""

    runner: Literal["oracle", "onnxruntime", "tensorrt", "ultralytics"] = Field(
        "oracle",
        description="'oracle' (simulated rig only: the simulator's truth, no model) or a model runner",
    )
    model: str | None = Field(None, description="model file (relative: to the config file's folder)")
    confidence: float | None = Field(
        None,
        ge=0,
        le=1,
        description="boxes below this confidence are dropped; null: the threshold stored with the model "
        "(picked on its validation split by 'detect train'), 0.25 for a model without one",
    )
    options: DetectorOptions = DetectorOptions()


def settings_error(exc: ValidationError, where: str, model: type[BaseModel]) -> DetectionError:
    """One line per problem, ``<where>.<key>: <what>``, with a 'did you mean' for an unknown key (the
    rig config's wording)."""
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        key = ".".join([where, *loc]) if where else ".".join(loc)
        if err["type"] == "extra_forbidden":
            owner: Any = model
            for part in loc[:-1]:
                is_model = isinstance(owner, type) and issubclass(owner, BaseModel)
                field = owner.model_fields.get(part) if is_model else None
                owner = field.annotation if field is not None else None
            is_model = isinstance(owner, type) and issubclass(owner, BaseModel)
            known = sorted(owner.model_fields) if is_model else []
            hint = difflib.get_close_matches(loc[-1], known, n=1)
            msg = "unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else "")
            if known:
                msg += f"; expected one of: {', '.join(known)}"
        else:
            msg = err["msg"]
            if "input" in err and not isinstance(err["input"], dict | list):
                msg += f" (got {err['input']!r})"
        lines.append(f"{key}: {msg}")
    return DetectionError("\n".join(lines))
