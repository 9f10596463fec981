"""Closed-loop rules: 3-D paw observations -> firmware commands. Pure: no I/O, no clocks.

Every command carries the trigger index and frame time of the observation that caused it
(``Command.cause_trigger_index`` / ``cause_t_frame_ns``), so the serial node and the benchmark can
measure camera frame -> output pin latency. The serial node sends the commands
(:meth:`rig.serial_link.SerialLink.send_command`).
"""

from __future__ import annotations

import math

from rig.config import ClosedLoopConfig
from rig.messages import Command, Point3D


def _dist(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    return math.dist(a, b)


class ClosedLoopRule:
    """Zone entry -> closed-loop TTL pulse (with a refractory period); reach onset -> sync mark.

    * zone: the paw enters the sphere ``zone_center_mm``/``zone_radius_mm`` (it was outside or unseen
      on the previous valid observation) -> ``ttl_pulse``.
    * reach onset: the paw leaves the rest sphere (``rest_xyz_mm``/``rest_radius_mm``) after having been
      inside it -> ``sync_pulse``; re-armed when the paw is back at rest.

    Invalid observations (``valid`` False or NaN) change nothing.
    """

    def __init__(self, cfg: ClosedLoopConfig) -> None:
        self.cfg = cfg
        self._in_zone = False
        self._at_rest: bool | None = None
        self._last_pulse_ns: int | None = None
        self.zone_entries = 0
        self.reach_onsets = 0

    def update(self, obs: Point3D, t_host_ns: int) -> list[Command]:
        """Commands caused by one observation (``t_host_ns``: now, stamped on the commands)."""
        cfg = self.cfg
        if not cfg.enabled or obs.name != cfg.point or not obs.valid:
            return []
        xyz = obs.xyz_filtered if cfg.use_filtered else obs.xyz
        if any(math.isnan(v) for v in xyz):
            return []
        out: list[Command] = []
        inside = _dist(xyz, cfg.zone_center_mm) <= cfg.zone_radius_mm
        if inside and not self._in_zone:
            self.zone_entries += 1
            refractory_ns = int(cfg.refractory_s * 1e9)
            if self._last_pulse_ns is None or obs.t_frame_ns - self._last_pulse_ns >= refractory_ns:
                self._last_pulse_ns = obs.t_frame_ns
                out.append(self._cmd("ttl_pulse", {"width_us": cfg.ttl_width_us}, obs, t_host_ns))
        self._in_zone = inside
        at_rest = _dist(xyz, cfg.rest_xyz_mm) <= cfg.rest_radius_mm
        if self._at_rest and not at_rest:
            self.reach_onsets += 1
            if cfg.sync_mark_on_reach:
                out.append(self._cmd("sync_pulse", {"width_us": cfg.mark_width_us}, obs, t_host_ns))
        self._at_rest = at_rest
        return out

    @staticmethod
    def _cmd(name: str, args: dict[str, int], obs: Point3D, t_host_ns: int) -> Command:
        return Command(
            name=name,
            args=args,
            cause_trigger_index=obs.trigger_index,
            cause_t_frame_ns=obs.t_frame_ns,
            t_host_ns=t_host_ns,
        )
