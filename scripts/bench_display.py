"""Live display cost: CPU time per refresh of the real window (Qt offscreen) drawing two 448x460 camera
views with boxes, reprojection, 3-D trace panels and health, fed like a 2 x 124 Hz session (every tick
gets ~4 new frames per camera, of which it draws the newest). Also the bridge's per-frame cost (ring copy,
downscale, TCP send) and a client's receive cost. Writes BENCHMARKS.md block "display".

"Max rate" is 1000 / (p50 CPU ms per refresh): the display rate one free core sustains. Whatever the
display's rate, the pipeline does not wait for it (see tests/integration/test_display_live.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import zmq

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))

from benchlib import machine, pct, write_block

from rig import messages as m
from rig.bridge import downscale_image
from rig.display.model import LiveState
from rig.sim.scene import synthetic_calibration


class FakeSource:
    """Feeds the window what a 2 x 124 Hz session sends between two 30 Hz ticks."""

    def __init__(self, cams: list[str], calib, per_tick: int = 4):
        self.cams = cams
        self.calib = calib
        self.per_tick = per_tick
        self.seq = 0
        rng = np.random.default_rng(0)
        self.images = [rng.integers(0, 255, (460, 448), dtype=np.uint8) for _ in range(8)]

    def pump(self, state: LiveState) -> None:
        for _ in range(self.per_tick):
            self.seq += 1
            t = time.monotonic_ns()
            xyz = (3 * np.sin(self.seq / 50), -10 + 8 * np.cos(self.seq / 40), -5 + 4 * np.sin(self.seq / 30))
            for cam in self.cams:
                uv = self.calib[cam].project(np.array([xyz]))[0]
                box = m.Box(uv[0] - 15, uv[1] - 15, uv[0] + 15, uv[1] + 15, 0.97)
                state.ingest(
                    f"det.{cam}",
                    m.Detections(
                        camera=cam,
                        seq=self.seq,
                        trigger_index=self.seq,
                        t_frame_ns=t,
                        t_trigger_ns=t,
                        t_start_ns=t,
                        t_end_ns=t,
                        boxes=[box],
                    ),
                )
            state.ingest(
                "point3d.paw",
                m.Point3D(
                    name="paw",
                    trigger_index=self.seq,
                    xyz=xyz,
                    xyz_filtered=xyz,
                    xyz_predicted=xyz,
                    valid=True,
                    reproj_error_px=0.3,
                    cameras=self.cams,
                    t_frame_ns=t,
                    t_trigger_ns=t,
                    t_det_ns=t,
                    t_out_ns=t,
                ),
            )
        for cam in self.cams:
            hdr = m.FrameHeader(
                camera=cam,
                seq=self.seq,
                frame_id=self.seq,
                trigger_index=self.seq,
                t_host_ns=t,
                width=448,
                height=460,
            )
            state.set_frame(hdr, self.images[self.seq % 8], skipped=self.per_tick - 1)
        if self.seq % 124 < self.per_tick:
            for node in ("cam-front", "cam-side", "detector", "recorder", "world"):
                state.ingest(f"stats.{node}", m.Stats(node=node, t_host_ns=t, fps=124.0, processed=self.seq))

    def send(self, command: str, detail: str = "") -> None:
        pass

    def close(self) -> None:
        pass


def bench_window(ticks: int) -> dict[str, float]:
    from rig.display.window import LiveWindow, qt_app

    app = qt_app()
    cams = ["front", "side"]
    calib = synthetic_calibration(448, 460, ("front", "side"))
    state = LiveState(cams, calib)
    win = LiveWindow(state, FakeSource(cams, calib), rate_hz=1000)  # the timer is not used: ticks are driven
    win.timer.stop()
    win.show()
    cpu: list[float] = []
    for k in range(ticks + 30):
        c0 = time.process_time()
        win.tick()
        app.processEvents()  # the paint happens here
        if k >= 30:  # warm-up
            cpu.append((time.process_time() - c0) * 1e3)
    win.close()
    p50, p99 = pct(cpu)
    return {"p50": p50, "p99": p99, "max_hz": 1000 / p50}


def bench_bridge(n: int, downscale: int) -> dict[str, float]:
    """Per frame: copy out of a ring-sized buffer, downscale, send on TCP; the client's receive + decode."""
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"tcp://127.0.0.1:{port}")
    time.sleep(0.3)
    src = np.random.default_rng(1).integers(0, 255, (460, 448), dtype=np.uint8)
    hdr = m.FrameHeader(
        camera="front", seq=0, frame_id=0, trigger_index=0, t_host_ns=0, width=448, height=460
    )
    send_ms, recv_ms = [], []
    for i in range(n):
        t0 = time.perf_counter()
        img = downscale_image(src.copy(), downscale)
        pub.send_multipart([b"frame.front", m.encode(hdr), img.data, i.to_bytes(8, "little")], copy=False)
        t1 = time.perf_counter()
        parts = sub.recv_multipart()
        m.decode(parts[1])
        np.frombuffer(parts[2], np.uint8)
        t2 = time.perf_counter()
        send_ms.append((t1 - t0) * 1e3)
        recv_ms.append((t2 - t1) * 1e3)
    pub.close(0)
    sub.close(0)
    ctx.term()
    s50, s99 = pct(send_ms)
    r50, r99 = pct(recv_ms)
    return {"send50": s50, "send99": s99, "recv50": r50, "recv99": r99}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ticks", type=int, default=300)
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    info = machine()
    w = bench_window(args.ticks)
    rows = [
        f"| live window refresh (2 views, boxes, 3-D panels, health) | {w['p50']:.2f} | {w['p99']:.2f} "
        f"| {w['max_hz']:.0f} Hz |"
    ]
    for ds in (1, 2):
        b = bench_bridge(args.frames, ds)
        send, recv = f"{b['send50']:.3f} | {b['send99']:.3f}", f"{b['recv50']:.3f} | {b['recv99']:.3f}"
        rows.append(f"| bridge: copy + downscale {ds} + TCP send, per frame | {send} | |")
        rows.append(f"| client: TCP receive + decode, per frame (downscale {ds}) | {recv} | |")
    text = f"""## Display and bridge: CPU cost per refresh and per frame

Command: `python scripts/bench_display.py {" ".join(sys.argv[1:])}`
Machine: {info}
The window is the real one (Qt offscreen), fed like a 2 x 124 Hz session; CPU time of this process only
(the Qt offscreen paint included). "Max rate" = what one free core sustains (1000 / p50).

| what | p50 ms | p99 ms | max rate |
|---|---|---|---|
{chr(10).join(rows)}
"""
    print(text)
    if not args.no_write:
        write_block("display", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
