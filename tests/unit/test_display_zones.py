"""The display outlines every closed-loop rule's region: the built-in zone and rest sphere, or a lab's
own rules (spheres and boxes)."""

from __future__ import annotations

import numpy as np

from rig.config import ClosedLoopConfig
from rig.display.model import REST_COLOR, zones_from_recorded_config


def _cfg(closed_loop: dict) -> dict:
    return {"pipeline": {"closed_loop": ClosedLoopConfig.model_validate(closed_loop).model_dump(mode="json")}}


def test_built_in_rules_give_the_zone_and_the_rest_sphere() -> None:
    zones, _ = zones_from_recorded_config(
        _cfg({"enabled": True, "zone_center_mm": [1, 2, 3], "zone_radius_mm": 4, "rest_radius_mm": 7})
    )
    by = {z.label: z for z in zones}
    assert by["closed-loop zone"].center == (1.0, 2.0, 3.0) and by["closed-loop zone"].radius_mm == 4
    assert by["rest"].radius_mm == 7 and by["rest"].color == REST_COLOR


def test_lab_rules_give_their_own_regions_spheres_and_boxes() -> None:
    out = {"kind": "ttl_pulse"}
    zones, _ = zones_from_recorded_config(
        _cfg(
            {
                "enabled": True,
                "rules": {
                    "laser": {"when": "zone_enter", "output": out, "zone": {"radius_mm": 5}},
                    "slot": {
                        "when": "dwell",
                        "dwell_s": 0.2,
                        "output": out,
                        "zone": {"shape": "box", "center_mm": [0, -10, 0], "size_mm": [4, 6, 8]},
                    },
                    "fast": {"when": "speed_above", "speed_mm_s": 300, "output": out},
                },
            }
        )
    )
    by = {z.label: z for z in zones}
    assert set(by) == {"laser", "slot"}  # a speed rule has no region
    assert by["laser"].size_mm is None and by["laser"].radius_mm == 5
    assert by["slot"].size_mm == (4.0, 6.0, 8.0) and by["slot"].center == (0.0, -10.0, 0.0)
    assert by["laser"].color != by["slot"].color


def test_box_outline_is_its_twelve_edges() -> None:
    from rig.display.window import _box_edges  # Qt is imported, no window opened

    zones, _ = zones_from_recorded_config(
        _cfg(
            {
                "enabled": True,
                "rules": {
                    "slot": {
                        "when": "zone_enter",
                        "output": {"kind": "ttl_pulse"},
                        "zone": {"shape": "box", "center_mm": [1, 1, 1], "size_mm": [2, 4, 6]},
                    }
                },
            }
        )
    )
    p = _box_edges(zones[0]).reshape(12, 2, 3)
    d = np.abs(p[:, 0] - p[:, 1])
    assert ((d > 0).sum(axis=1) == 1).all()  # each edge runs along one axis
    assert sorted(d.max(axis=1).tolist()) == [2.0] * 4 + [4.0] * 4 + [6.0] * 4
    assert np.allclose(p.reshape(-1, 3).mean(axis=0), [1, 1, 1])


def test_live_and_recorded_configs_give_the_same_zones() -> None:
    """The live display reads the typed config, the review a recorded session's dict: same outlines."""
    from rig.config import DEFAULT_CONFIG, load_config
    from rig.display.model import zones_from_config

    over = {"pipeline": {"closed_loop": {"enabled": True, "zone_radius_mm": 3, "rest_radius_mm": 6}}}
    cfg = load_config(DEFAULT_CONFIG, over).config
    live = zones_from_config(cfg)
    recorded = zones_from_recorded_config(cfg.model_dump(mode="json"))
    assert live == recorded and {z.label for z in live[0]} == {"closed-loop zone", "rest"}
