"""``--sim``: run a real rig's config in simulation, keeping everything but the hardware.

:func:`simulated` is a pure function on the raw config (the YAML as read, before validation). It
swaps:

- every camera's backend for ``synthetic`` (same names, ``width``/``height``, exposure and trigger
  settings; ``serial`` and the backend's own ``options`` dropped, since they name real devices). The
  synthetic cameras render the simulated reaching scene (a paw reaching for a pellet) through the
  calibration, so a one-camera rig sees the front view of that scene; they are Mono8, like every
  camera the recorder takes today;
- the Arduino (when the rig has one) for the real firmware in the simulator
  (``rig.arduino.backend: simulator``; ``port`` and ``serial_number`` dropped; servo, stepper, TTL and
  sync settings kept). A rig without an Arduino stays without one: the simulated world then makes the
  frame clock at ``rig.trigger.rate_hz`` on the host;
- ``rig.calibration`` for ``builtin:synthetic`` (the simulated rig's known geometry, one or two cameras,
  at each camera's size) unless the rig's own calibration fits the simulated scene (``keep_calibration``,
  decided by :func:`calibration_fits`): a placeholder never does;

and adds a ``simulation`` section (defaults) when the config has none, and ``sim-`` in front of the
session folder's name, so a simulated session is never mistaken for an animal's. Everything else (the
experiment, the detector and its model, the closed loop, the recorder, the output folder) is kept.

The CLI passes the result on as overrides (:func:`sim_overrides`): every node of the session reads its
config from the file plus the overrides, so the nodes see the same simulated rig.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rig.config import deep_merge, load_config
from rig.errors import ConfigError, UserError

__all__ = ["calibration_fits", "sim_overrides", "simulated", "simulation_overrides"]

MAX_SIM_CAMERAS = 2  # the built-in synthetic calibration's views (front, side)
SIM_NAME_PREFIX = "sim-"


def _cameras(raw: dict[str, Any]) -> dict[str, Any]:
    rig = raw.get("rig")
    cams = rig.get("cameras") if isinstance(rig, dict) else None
    if not isinstance(cams, dict) or not cams:
        raise ConfigError("--sim: the config has no rig.cameras to simulate")
    return cams


def simulation_overrides(raw: dict[str, Any], keep_calibration: bool = False) -> dict[str, Any]:
    """What ``--sim`` changes in ``raw``, as a nested mapping to merge over it (``rig.config.deep_merge``):
    ``None`` for a key means "dropped" (the field's default)."""
    cams = _cameras(raw)
    rig: dict[str, Any] = raw["rig"]
    if not keep_calibration and len(cams) > MAX_SIM_CAMERAS:
        raise ConfigError(
            f"--sim: the built-in simulated rig has at most {MAX_SIM_CAMERAS} cameras (front and side "
            f"views); rig.cameras has {len(cams)}: give rig.calibration a calibration of every camera "
            "that sees the simulated reach workspace (around the pellet at the world origin)"
        )
    over_rig: dict[str, Any] = {
        "cameras": {name: {"backend": "synthetic", "serial": None, "options": None} for name in cams}
    }
    if not keep_calibration:
        over_rig["calibration"] = "builtin:synthetic"
    if isinstance(rig.get("arduino"), dict):
        over_rig["arduino"] = {"backend": "simulator", "port": None, "serial_number": None}
    over: dict[str, Any] = {"rig": over_rig}
    if not isinstance(raw.get("simulation"), dict):
        over["simulation"] = {}
    session = raw.get("session")
    name = str((session.get("name") if isinstance(session, dict) else None) or "{subject}_{date}_{time}")
    if not name.startswith(SIM_NAME_PREFIX):
        over["session"] = {"name": SIM_NAME_PREFIX + name}
    return over


def simulated(raw: dict[str, Any], keep_calibration: bool = False) -> dict[str, Any]:
    """``raw`` with every camera synthetic and the board simulated (see the module's docstring)."""
    return deep_merge(raw, simulation_overrides(raw, keep_calibration))


def calibration_fits(raw: dict[str, Any], base_dir: Path) -> bool:
    """Whether the rig's own calibration can film the simulated scene: a file (not a placeholder) that
    holds every camera at its configured size, plausible, with the pellet and the paw's rest position in
    front of every camera and inside its image. Reads the calibration file ``raw`` names."""
    from analysis.calibration_check import camera_problems
    from analysis.camera import load_calibration
    from analysis.errors import AnalysisError
    from rig.sim.scene import PAW_REST, PELLET

    cams = _cameras(raw)
    spec = str(raw["rig"].get("calibration") or "")
    if spec.startswith("builtin:") or not spec:
        return False
    path = Path(spec).expanduser()
    try:
        calib = load_calibration(path if path.is_absolute() else base_dir / path)
    except (AnalysisError, OSError):
        return False
    if calib.meta.get("placeholder"):
        return False
    points = np.array([PELLET, PAW_REST], dtype=float)
    for name, cam_raw in cams.items():
        if name not in calib.cameras:
            return False
        cam = calib[name]
        size = (int(cam_raw.get("width", 448)), int(cam_raw.get("height", 460)))
        if cam.size != size or camera_problems(cam):
            return False
        if (cam.to_camera(points)[:, 2] <= 0).any():
            return False
        uv = cam.project(points)
        if not (np.isfinite(uv).all() and (uv >= 0).all() and (uv[:, 0] < size[0]).all()):
            return False
        if not (uv[:, 1] < size[1]).all():
            return False
    return True


def sim_overrides(config: str | Path | None, overrides: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The CLI's ``--sim``: ``overrides`` plus what :func:`simulated` changes in the config they apply to,
    and one line saying what was swapped. The real config is validated first, so a mistake in it is
    reported as it is, not as a mistake of the simulation."""
    loaded = load_config(config, overrides)
    raw = loaded.raw
    try:
        keep = calibration_fits(raw, loaded.base_dir)
    except UserError:
        keep = False
    over = deep_merge(overrides, simulation_overrides(raw, keep))
    cfg = loaded.config
    board = "the simulated firmware" if cfg.rig.arduino is not None else "no board (host clock)"
    calib = f"its own calibration {cfg.rig.calibration}" if keep else "the built-in synthetic calibration"
    note = (
        f"--sim: {len(cfg.rig.cameras)} synthetic camera(s) ({', '.join(cfg.rig.cameras)}), {board}, {calib}"
    )
    return over, note
