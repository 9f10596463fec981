"""The display node: the live window as a node of the session graph (``pipeline.display.enabled``).

It subscribes to every node, samples the newest frame of each camera from the shared-memory rings at
30 Hz and never holds anything up: its subscription queue is its own, and if it stalls, frames are
skipped for it alone. With no screen (no ``DISPLAY``/``WAYLAND_DISPLAY`` and no ``QT_QPA_PLATFORM``) it
logs one warning and idles until the session ends, instead of taking the session down.
"""

from __future__ import annotations

import os
import time

import zmq

from rig import messages as m
from rig.display.model import LiveState, zones_from_config
from rig.display.sources import BusSource
from rig.nodes.base import Node
from rig.session_folder import session_calibration


def screen_available() -> bool:
    return bool(
        os.environ.get("QT_QPA_PLATFORM") or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )


class DisplayNode(Node):
    def setup(self) -> None:
        self.end_deadline: float | None = None
        self.window = None
        assert self.sub is not None
        cams = list(self.cfg.rig.cameras)
        try:
            calib = session_calibration(self.loaded, self.session_dir)
        except Exception as exc:  # the display works without reprojection
            self.log.warning("display: no calibration, no reprojection: %s", exc)
            calib = None
        self.state = LiveState(cams, calib)
        self.state.zones, self.state.pellet_configured = zones_from_config(self.cfg)
        for c, cc in self.cfg.rig.cameras.items():
            self.state.views[c].full_size = (cc.width, cc.height)
        self.source = BusSource(self.sub.sock, self.rt.session_id, self.publish, on_message=self._watch)
        if not screen_available():
            self.log.warning(
                "display: no screen (DISPLAY unset); set QT_QPA_PLATFORM=offscreen or run with a screen"
            )
            return
        if not os.environ.get("QT_QPA_PLATFORM"):
            # an unreachable X server must not abort the node (Qt would, and the supervisor would restart
            # it in vain): fall back to drawing offscreen, and say so
            first = (
                "wayland" if os.environ.get("WAYLAND_DISPLAY") and not os.environ.get("DISPLAY") else "xcb"
            )
            os.environ["QT_QPA_PLATFORM"] = f"{first};offscreen"
        from rig.display.window import LiveWindow, qt_app

        self.app = qt_app()
        if self.app.platformName() == "offscreen" and not os.environ["QT_QPA_PLATFORM"].startswith(
            "offscreen"
        ):
            self.log.warning(
                "display: cannot open a window on the screen (DISPLAY=%s); drawing offscreen",
                os.environ.get("DISPLAY", ""),
            )
        self.window = LiveWindow(self.state, self.source, title=f"DeepBehavior live: {self.session_dir.name}")
        self.window.show()

    def _watch(self, topic: str, msg: m.AnyMsg) -> None:
        if isinstance(msg, m.Control) and msg.command == "stop":
            if msg.detail in ("", self.name):
                self.end_deadline = time.monotonic()
            elif msg.detail == "recorder" and self.end_deadline is None:
                self.end_deadline = time.monotonic() + 60.0
        elif isinstance(msg, m.NodeStatus) and msg.node == "recorder" and msg.status == "exiting":
            self.end_deadline = time.monotonic() + 0.5

    def step(self) -> None:
        assert self.sub is not None
        if self.window is None:  # headless: drain and wait for the end
            self.sub.sock.poll(50)
            self.source.pump(self.state)
        else:
            self.sub.sock.poll(10, zmq.POLLIN)
            self.app.processEvents()
            if not self.window.isVisible():
                self.log.info("display: window closed by the user; the session goes on")
                self.window = None
        self.processed = sum(v.shown for v in self.state.views.values())
        if self.end_deadline is not None and time.monotonic() > self.end_deadline:
            self.done = True

    def extra_stats(self) -> dict[str, float]:
        return {
            "skipped": float(sum(v.skipped for v in self.state.views.values())),
            "overrun": float(self.source.overrun),
        }

    def teardown(self) -> None:
        if getattr(self, "window", None) is not None:
            self.window.close()  # type: ignore[union-attr]
        if hasattr(self, "source"):
            self.source.close()
