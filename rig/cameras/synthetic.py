"""The synthetic camera: renders the simulated rig each time the (simulated) hardware trigger fires.

It subscribes to the synthetic world's ``sim.truth`` stream, which is the trigger: one Truth per
trigger pulse, carrying the trigger index and the paw/pellet positions at that instant. ``grab``
waits for the next pulse and renders the camera's view of it, exactly as a hardware-triggered camera
exposes one frame per pulse. The ground truth itself is never passed on to the pipeline.

Context keys: ``zmq_context``, ``truth_endpoint`` (the world node's PUB), ``calibration``
(analysis.camera.Calibration), ``simulation`` (SimulationConfig).
"""

from __future__ import annotations

import math
import time

import numpy as np
import zmq

from rig import messages as m
from rig.cameras.base import CameraBackend, CameraInfo, GrabbedFrame, StreamEnded
from rig.config_base import CameraOptions
from rig.errors import AcquisitionTimeout, ConfigError
from rig.sim.render import Appearance, SceneRenderer


class SyntheticOptions(CameraOptions):
    """``rig.cameras.<name>.options`` of a synthetic camera: none (the scene comes from ``simulation``,
    the view from the calibration)."""


class SyntheticCamera(CameraBackend):
    backend_name = "synthetic"
    options_model = SyntheticOptions

    def open(self) -> None:
        for key in ("zmq_context", "truth_endpoint", "calibration", "simulation"):
            if key not in self.context:
                raise ConfigError(f"camera {self.name!r}: synthetic backend needs context {key!r}")
        calib = self.context["calibration"]
        cam = calib[self.name]
        if cam.size != (self.config.width, self.config.height):
            raise ConfigError(
                f"rig.cameras.{self.name}: size {self.config.width}x{self.config.height} differs from the "
                f"calibration's {cam.size[0]}x{cam.size[1]}"
            )
        sim = self.context["simulation"]
        seed = sim.seed * 1000 + sum(map(ord, self.name))
        self.renderer = SceneRenderer(
            cam, Appearance(noise_sigma=sim.noise_sigma, background_seed=seed), seed
        )
        ctx: zmq.Context[zmq.Socket[bytes]] = self.context["zmq_context"]
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        sock.setsockopt(zmq.SUBSCRIBE, b"sim.truth")
        sock.setsockopt(zmq.SUBSCRIBE, b"node.world")
        sock.connect(self.context["truth_endpoint"])
        self.sock: zmq.Socket[bytes] | None = sock
        self.frame_id = 0
        self._image = np.empty((self.config.height, self.config.width), np.uint8)
        self._ended = False

    def configure(self) -> None:
        pass  # the simulated sensor has no settings beyond size and noise

    def start(self) -> None:
        pass

    def grab(self, timeout_s: float) -> GrabbedFrame:
        if self._ended:
            raise StreamEnded(self.name)
        deadline = time.monotonic() + timeout_s
        while True:
            left_ms = (deadline - time.monotonic()) * 1000
            assert self.sock is not None, "grab() before open()"
            if left_ms <= 0 or not self.sock.poll(math.ceil(left_ms)):
                raise AcquisitionTimeout(f"camera {self.name!r}: no trigger within {timeout_s:.3f} s")
            topic, payload = self.sock.recv_multipart()
            msg = m.decode(payload, topic.decode())
            if isinstance(msg, m.NodeStatus):
                if msg.status in ("eos", "exiting", "failed"):
                    self._ended = True
                    raise StreamEnded(self.name)
                continue
            if isinstance(msg, m.Truth):
                return self._render(msg)

    def _render(self, truth: m.Truth) -> GrabbedFrame:
        pellet = np.array(truth.pellet_xyz) if truth.pellet_present else None
        img, _box = self.renderer.render(
            np.array(truth.paw_xyz), truth.paw_radius_mm, pellet, out=self._image
        )
        t_host = time.monotonic_ns()
        frame = GrabbedFrame(
            image=img,
            frame_id=self.frame_id,
            t_host_ns=t_host,
            # the simulated camera clock: mid-exposure on the host clock
            t_device_ns=truth.t_trigger_ns + int(self.config.exposure_us * 500),
            trigger_index=truth.trigger_index,
            t_trigger_ns=truth.t_trigger_ns,
        )
        self.frame_id += 1
        return frame

    def stop(self) -> None:
        pass

    def close(self) -> None:
        sock = getattr(self, "sock", None)
        if sock is not None:
            sock.close(linger=0)
            self.sock = None

    def info(self) -> CameraInfo:
        return CameraInfo(backend="synthetic", model="SyntheticCamera 448x460 Mono8", serial=self.name)
