"""``deepbehavior align``: matching the pseudo-random sync pulses of a session to an imaging system's record
of them (synthetic sequences with offset, drift, jitter and pulses missing on both sides), the imaging
frame numbers from the firmware's frame-clock record, one-line errors for a bad file, and a short simulated
session end to end (the real firmware in simavr, its frame-clock input driven by the harness's imaging
clock)."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from rig.align import frame_at, frame_clock_numbers, match_sync, parse_times
from rig.cli import main
from rig.errors import InputError
from tests.sessions import start_session

pytestmark = [pytest.mark.slow, pytest.mark.firmware]

REPO = Path(__file__).resolve().parents[2]


def sync_sequences(
    n: int, drift_ppm: float, drop: float, jitter_s: float, seed: int, extra: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Firmware pulse times (intervals 0.5-1.5 s in whole ms, as the firmware draws them, + loop lateness),
    the imaging system's record of the same pulses (offset 4321 s, clock ``drift_ppm`` fast, jitter, a
    fraction ``drop`` missing, ``extra`` spurious pulses), and which true pulse each row is (-1: spurious)."""
    rng = np.random.default_rng(seed)
    t = 3.0 + np.cumsum(rng.integers(500, 1501, n) / 1e3) + rng.uniform(0, 1e-3, n)
    img = 4321.0 + (t - t[0]) * (1 + drift_ppm * 1e-6) + rng.normal(0, jitter_s, n)
    keep_fw = np.flatnonzero(rng.random(n) >= drop)
    keep_img = np.flatnonzero(rng.random(n) >= drop)
    b = img[keep_img]
    label = keep_img
    if extra:
        b = np.concatenate([b, rng.uniform(b[0], b[-1], extra)])
        label = np.concatenate([label, np.full(extra, -1)])
        order = np.argsort(b)
        b, label = b[order], label[order]
    return t[keep_fw], b, keep_fw, label


@pytest.mark.parametrize(
    ("n", "drift_ppm", "drop", "extra"),
    [(120, 0.0, 0.0, 0), (600, -800.0, 0.1, 5), (3600, 3000.0, 0.1, 20)],
)
def test_match_recovers_every_common_pulse_and_the_drift(
    n: int, drift_ppm: float, drop: float, extra: int
) -> None:
    a, b, keep_fw, label = sync_sequences(n, drift_ppm, drop, 3e-4, seed=n, extra=extra)
    m = match_sync(a, b)
    common = set(keep_fw.tolist()) & set(label.tolist())
    wrong = [(i, j) for i, j in m.pairs if label[j] != keep_fw[i]]
    assert not wrong, wrong[:5]
    assert len(m.pairs) == len(common)
    assert abs(m.drift_ppm - drift_ppm) < 5, m.drift_ppm
    assert np.abs(m.residuals_s).max() < 5 * 3e-4
    # every firmware pulse the imaging record lacks (inside its span) is named, and nothing else
    span = (b[0] - 0.01, b[-1] + 0.01)
    inside = {int(i) for i in range(len(a)) if span[0] <= m.to_imaging(a[i]) <= span[1]}
    assert set(m.missing_in_imaging) == {i for i in inside if int(keep_fw[i]) not in label}
    assert len(m.missing_in_session) == len(b) - len(m.pairs) - m.outside_imaging


def test_match_refuses_unrelated_or_millisecond_records() -> None:
    a, b, _, _ = sync_sequences(60, 0.0, 0.0, 1e-4, seed=3)
    other, _, _, _ = sync_sequences(60, 0.0, 0.0, 1e-4, seed=4)
    with pytest.raises(InputError, match="no run of 4 sync intervals"):
        match_sync(a, other)
    with pytest.raises(InputError, match="milliseconds"):
        match_sync(a, b * 1000)
    with pytest.raises(InputError, match="has 3 sync pulses: matching needs 5"):
        match_sync(a[:3], b)


def test_frame_numbers_survive_missing_pulses_and_lost_reports() -> None:
    rng = np.random.default_rng(1)
    period = 33_336.0  # 30 Hz, 80 ppm slow
    true = np.arange(2000)
    edges = 5_000_000 + true * period + rng.uniform(-40, 40, len(true))
    kept = np.sort(rng.choice(len(true), 1800, replace=False))  # 10 % of pulses (or reports) missing
    numbers, p = frame_clock_numbers(edges[kept])
    assert np.array_equal(numbers, true[kept] - true[kept][0])
    assert abs(p - period) < 0.05
    # a time half a frame after frame k's edge belongs to frame k, whether k's edge was seen or not
    t = edges[kept[0]] + (np.arange(10, 1900) + 0.5) * period
    assert np.array_equal(frame_at(edges[kept], numbers, p, t), np.arange(10, 1900))
    assert frame_at(edges[kept], numbers, p, np.array([edges[kept[0]] - 10.0]))[0] == -1


def test_time_file_errors_name_file_and_line() -> None:
    assert parse_times("time_s,level\n1.5,1\n2.25,1\n", "x.csv").tolist() == [1.5, 2.25]
    assert parse_times("# exported\nframe,time\n0,0.5\n1,0.75\n", "x.csv").tolist() == [0.5, 0.75]
    assert parse_times("1\n\n2\n3\n", "x.csv").tolist() == [1, 2, 3]
    # a UCLA Miniscope timeStamps.csv: the frame times in ms, in a named column
    stamps = "Frame Number,Time Stamp (ms),Buffer Index\n0,0,1\n1,33,2\n2,67,3\n"
    got = parse_times(stamps, "ts.csv", column_name="time stamp (ms)", unit_s=1e-3)
    assert np.allclose(got, [0.0, 0.033, 0.067])
    with pytest.raises(InputError, match=r"^ts\.csv:1: no column 'time'"):
        parse_times(stamps, "ts.csv", column_name="time")
    for text, where, what in [
        ("t\n1.0\nabc\n", "x.csv:3", "'abc' is not a time"),
        ("1.0\n2.0\n1.5\n", "x.csv:3", "times must increase"),
        ("1.0\nnan\n", "x.csv:2", "not a finite time"),
        ("", "x.csv", "no sync pulse times"),
        ("time_s\n", "x.csv", "a header and no"),
    ]:
        with pytest.raises(InputError) as info:
            parse_times(text, "x.csv")
        assert str(info.value).startswith(f"{where}: ") and what in str(info.value), str(info.value)


def fake_session(folder: Path, fw_us: np.ndarray) -> Path:
    folder.mkdir()
    (folder / "session.json").write_text("{}")
    rows = "".join(f"{i},{int(t)},-1\n" for i, t in enumerate(fw_us))
    (folder / "sync_pulses.csv").write_text("index,t_fw_us,t_host_ns\n" + rows)
    (folder / "triggers.csv").write_text("index,t_host_ns,t_fw_us\n0,-1,1000000\n1,-1,1008064\n")
    return folder


def test_cli_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, _, _, _ = sync_sequences(30, 0.0, 0.0, 1e-4, seed=7)
    session = fake_session(tmp_path / "s", a * 1e6)
    bad = tmp_path / "imaging.csv"
    bad.write_text("time_s\n1.0\n2.0\n2.0\n")
    assert main(["align", str(session), "--imaging-sync", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"deepbehavior: error: {bad}:4: times must increase (2 s after 2 s)"]
    assert main(["align", str(tmp_path), "--imaging-sync", str(bad)]) == 2
    assert "not a session folder" in capsys.readouterr().err
    assert main(["align", str(session), "--imaging-sync", str(tmp_path / "none.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none.csv" in err[0]


def test_cli_writes_the_alignment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b, _, _ = sync_sequences(40, 250.0, 0.05, 1e-4, seed=8)
    session = fake_session(tmp_path / "s", a * 1e6)
    sync = tmp_path / "imaging.csv"
    sync.write_text("time_s\n" + "".join(f"{t:.6f}\n" for t in b))
    assert main(["align", str(session), "--imaging-sync", str(sync)]) == 0
    out = capsys.readouterr().out
    assert "sync: " in out and "written: " in out
    summary = json.loads((session / "alignment" / "summary.json").read_text())
    assert abs(summary["drift_ppm"] - 250) < 20
    with open(session / "alignment" / "frames.csv") as f:
        frames = list(csv.DictReader(f))
    expected = summary["offset_s"] + summary["scale"] * 1.0
    assert frames[0]["trigger_index"] == "0" and abs(float(frames[0]["t_imaging_s"]) - expected) < 1e-6


# ----------------------------------------------------------------------------- a simulated session
@pytest.fixture(scope="module")
def firmware_built() -> None:
    subprocess.run(["make", "-s", "-C", str(REPO / "firmware"), "all"], check=True)


RATE_HZ = 25.0
DRIFT_PPM = 400.0  # the simulated imaging clock runs 400 ppm slow against the AVR's


@pytest.mark.firmware
@pytest.mark.timeout(300)
def test_simulated_session_aligns_to_its_imaging_clock(tmp_path: Path, firmware_built: None) -> None:
    """A 6 s simulated session sends pseudo-random sync pulses and records the harness's imaging frame
    clock (25 Hz, jitter, 400 ppm slow, 5 % of pulses missing). The imaging system's side is built from
    its clock's definition (frame k at k / 25 s, imaging time), with two sync pulses it missed and one the
    session's record lacks; align must put every behavior frame on the imaging clock and in its frame."""
    proc = start_session(
        tmp_path,
        "--duration", "6",
        "--set", "rig.arduino.rsync.enabled=true",
        "--set", "rig.arduino.rsync.min_ms=150",
        "--set", "rig.arduino.rsync.max_ms=350",
        "--set", "rig.arduino.rsync.width_ms=10",
        "--set", "rig.arduino.frame_clock=true",
        "--set", f"rig.arduino.simulator.imaging_clock.rate_hz={RATE_HZ}",
        "--set", "rig.arduino.simulator.imaging_clock.jitter_us=30",
        "--set", f"rig.arduino.simulator.imaging_clock.drift_ppm={DRIFT_PPM}",
        "--set", "rig.arduino.simulator.imaging_clock.drop_permille=50",
    )  # fmt: skip
    _, err = proc.communicate(timeout=200)
    assert proc.returncode == 0, err
    (session,) = [p for p in tmp_path.iterdir() if p.is_dir()]

    def table(name: str) -> dict[str, np.ndarray]:
        with open(session / name) as f:
            rows = list(csv.DictReader(f))
        return {k: np.array([int(r[k]) for r in rows], dtype=np.int64) for k in rows[0]}

    # the session's record: every sync pulse and frame edge, counted without a gap, on both clocks
    sync, edges = table("sync_pulses.csv"), table("imaging_frames.csv")
    assert len(sync["index"]) >= 15 and sync["index"].tolist() == list(range(len(sync["index"])))
    assert len(edges["index"]) >= 100 and edges["index"].tolist() == list(range(len(edges["index"])))
    for t in (sync, edges):
        assert np.all(np.diff(t["t_fw_us"]) > 0) and np.all(np.diff(t["t_host_ns"]) > 0)
    clock = json.loads((session / "clock.json").read_text())
    assert clock["rsync"]["rows"] == len(sync["index"]) and clock["rsync"]["missing_reports"] == 0
    assert clock["frame_clock"]["rows"] == len(edges["index"])

    # the truth: frame n after the first recorded edge is at imaging time T0 + n / rate; the imaging clock
    # runs DRIFT_PPM slow against micros() (the AVR's cycles)
    period_us = 1e6 / RATE_HZ * (1 + DRIFT_PPM * 1e-6)
    t_first = float(edges["t_fw_us"][0])
    t0 = 1000.0

    def truth_imaging(t_fw_us: np.ndarray) -> np.ndarray:
        return t0 + (t_fw_us - t_first) / period_us / RATE_HZ

    rng = np.random.default_rng(0)
    img_sync = truth_imaging(sync["t_fw_us"].astype(np.float64)) + rng.normal(0, 100e-6, len(sync["index"]))
    imaging_missed = [3, 8]
    img_sync = np.delete(img_sync, imaging_missed)
    (tmp_path / "sync.csv").write_text("time_s\n" + "".join(f"{t:.6f}\n" for t in img_sync))
    n_frames = int((edges["t_fw_us"][-1] - t_first) / period_us) + 3
    (tmp_path / "frames.csv").write_text("".join(f"{t0 + k / RATE_HZ:.6f}\n" for k in range(n_frames)))
    # a sync report the session lost (the imaging record has it)
    lines = (session / "sync_pulses.csv").read_text().splitlines(keepends=True)
    lost = 12
    (session / "sync_pulses.csv").write_text("".join(lines[: lost + 1] + lines[lost + 2 :]))

    rc = main(
        ["align", str(session), "--imaging-sync", str(tmp_path / "sync.csv"),
         "--imaging-frames", str(tmp_path / "frames.csv")]
    )  # fmt: skip
    assert rc == 0
    s = json.loads((session / "alignment" / "summary.json").read_text())
    assert s["sync"]["missing_in_imaging"] == imaging_missed
    assert s["sync"]["session_reports_lost"] == 1 and len(s["sync"]["missing_in_session_rows"]) == 1
    assert s["sync"]["residual_ms"]["max"] < 0.6
    assert abs(s["drift_ppm"] + DRIFT_PPM) < 40, s["drift_ppm"]  # imaging clock slow: negative
    fc = s["frame_clock"]
    assert fc["pulses_missing"] > 0 and abs(fc["rate_hz_imaging_clock"] - RATE_HZ) < 0.01

    with open(session / "alignment" / "frames.csv") as f:
        frames = list(csv.DictReader(f))
    trig = table("triggers.csv")
    assert [int(r["trigger_index"]) for r in frames] == trig["index"].tolist()
    t_fw = trig["t_fw_us"].astype(np.float64)
    t_img = np.array([float(r["t_imaging_s"]) for r in frames])
    err_ms = np.abs(t_img - truth_imaging(t_fw)) * 1e3
    assert err_ms.max() < 0.5, err_ms.max()  # the truth's origin has the first edge's jitter (30 us)
    # the frame each behavior frame falls in: from the firmware's record of the edges and from the imaging
    # system's frame times, both as the truth says (away from an edge by more than its jitter)
    true_frame = np.floor((t_fw - t_first) / period_us).astype(np.int64)
    phase = (t_fw - t_first) / period_us - true_frame
    clear = (phase > 0.01) & (phase < 0.99) & (t_fw >= t_first) & (t_fw <= edges["t_fw_us"][-1])
    assert clear.sum() > 0.9 * len(t_fw[(t_fw >= t_first) & (t_fw <= edges["t_fw_us"][-1])])
    for col in ("frame_clock_index", "imaging_frame"):
        got = np.array([int(r[col]) for r in frames])
        assert np.array_equal(got[clear], true_frame[clear]), col
    assert np.all(np.array([int(r["frame_clock_index"]) for r in frames])[t_fw < t_first] == -1)

    with open(session / "alignment" / "events.csv") as f:
        events = list(csv.DictReader(f))
    starts = [e for e in events if e["kind"] == "trial_start"]
    assert starts and all(e["t_imaging_s"] for e in starts)
