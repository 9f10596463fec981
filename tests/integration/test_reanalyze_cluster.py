"""Batch reanalysis on real distributed clusters, with a worker killed mid-batch; progress and ``--status``.

* A one-node SLURM cluster (munged, slurmctld, slurmd on localhost: tests/slurm_cluster.py): ``reanalyze
  --slurm`` submits its worker through dask-jobqueue, SLURM starts it, its job is cancelled (``scancel``)
  while it re-detects a session; a new job replaces it and the batch still finishes every session, the
  lost one run again, with results identical to a local run's.
* ``reanalyze --scheduler ADDR`` against a ``dask scheduler`` and two ``dask worker`` processes started
  here; one worker (nanny and all) is killed mid-session; same promises. Needs no SLURM.
* ``reanalyze --status`` reads a session's state from its folder alone: done, running (with frames,
  frames/s and ETA), failed with the reason, or interrupted (a worker that stopped rewriting its progress).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rig.reanalyze import PARTIAL_DIR, STALE_S, Options, reanalyze_session, session_status
from rig.session import read_csv_columns
from tests.integration.test_reanalyze import fresh
from tests.sessions import run_session
from tests.slurm_cluster import SlurmCluster, SlurmError, why_not

pytestmark = [pytest.mark.slow, pytest.mark.firmware, pytest.mark.timeout(600)]

CLI = [sys.executable, "-m", "rig.cli", "reanalyze"]
TIMING_COLUMNS = {"t_start_ns", "t_end_ns"}  # the offline detector's own clock: differs run to run


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight trials of the default simulated rig (~3000 frames per camera, crf-12 video, the bundled model):
    re-detection lasts several of a worker's 2 s progress heartbeats even on an idle machine (two trials
    were re-detected in ~2 s, before the test could see a worker detecting and cancel it)."""
    r, s = run_session(tmp_path_factory.mktemp("rec"), "--trials", "8")
    assert r.returncode == 0 and s is not None, r.stderr
    return s.path


@pytest.fixture(scope="module")
def local_result(recorded: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session re-detected on the default local cluster: what every other cluster must reproduce."""
    p = fresh(recorded, tmp_path_factory.mktemp("local") / "s")
    out = subprocess.run(
        [*CLI, "--quiet", "--detect", "--workers", "1", str(p)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return p


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory):
    """A one-node SLURM cluster for this module; every daemon and job process is gone afterwards."""
    why = why_not()
    if why:
        pytest.skip(why)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except SlurmError as exc:  # everything is installed: a cluster that does not start is a failure
        cluster.stop()
        pytest.fail(f"the one-node SLURM cluster did not start: {exc}")
    yield cluster
    cluster.stop()
    assert all(p.poll() is not None for p in cluster.started), "a SLURM daemon is still running"
    assert not cluster.job_processes(), "a SLURM job's process is still running"


def same_result(a: Path, b: Path) -> None:
    """Identical 3-D, detections (less the detector's own timings), trials and reaching tables."""
    ra, rb = a / "reanalysis", b / "reanalysis"
    for name in ("points3d.csv", "trials.csv", "reaching/reaches.csv", "reaching/kinematics.csv"):
        assert (ra / name).read_bytes() == (rb / name).read_bytes(), name
    da, db = read_csv_columns(ra / "detections.csv"), read_csv_columns(rb / "detections.csv")
    assert da.keys() == db.keys()
    for c in set(da) - TIMING_COLUMNS:
        assert np.array_equal(da[c], db[c], equal_nan=da[c].dtype.kind == "f"), c
    sa, sb = (json.loads((r / "summary.json").read_text()) for r in (ra, rb))
    for key in ("n_points", "valid", "frames_detected", "diff_vs_online_mm", "error_vs_truth_mm", "analyses"):
        assert sa[key] == sb[key], key


def start_batch(args: list[str], tmp_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``reanalyze ARGS`` in the background, stdout/stderr to files (read with :func:`output`), run from
    ``tmp_path`` (SLURM writes its jobs' slurm-<id>.out files into the submitting folder)."""
    out = open(tmp_path / "batch.out", "w")  # noqa: SIM115 (the child holds it; closed here at once)
    err = open(tmp_path / "batch.err", "w")  # noqa: SIM115
    try:
        return subprocess.Popen([*CLI, *args], stdout=out, stderr=err, text=True, env=env, cwd=tmp_path)
    finally:
        out.close()
        err.close()


def output(tmp_path: Path) -> tuple[str, str]:
    return (tmp_path / "batch.out").read_text(), (tmp_path / "batch.err").read_text()


def session_in_detection(paths: list[Path], proc: subprocess.Popen, tmp_path: Path) -> tuple[Path, dict]:
    """Wait for a session whose worker is re-detecting it (progress.json: stage detect, frames left);
    return it and its progress."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the batch ended before any worker was seen detecting: " + str(
            output(tmp_path)
        )
        for p in paths:
            try:
                prog = json.loads((p / PARTIAL_DIR / "progress.json").read_text())
            except (OSError, ValueError):
                continue
            if prog["stage"] == "detect" and 0 < prog["frames_done"] < 0.7 * prog["frames_total"]:
                return p, prog
        time.sleep(0.1)
    raise AssertionError("no session was seen in detection within 300 s: " + str(output(tmp_path)))


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(e.decode(errors="replace").split("=", 1) for e in raw if b"=" in e)


def check_batch(proc: subprocess.Popen, tmp_path: Path, paths: list[Path], local: Path, killed: str) -> None:
    """The batch ended well, every session done, each identical to the local run; the killed worker's
    session was finished by another worker; the progress lines had frames/s and an ETA."""
    proc.wait(timeout=400)
    out, err = output(tmp_path)
    assert proc.returncode == 0, out + err
    for p in paths:
        assert f"done    {p}" in out, out
        same_result(local, p)
    assert f"{len(paths)} of {len(paths)} sessions reanalysed" in out
    assert re.search(r"running .*: \d+/\d+ frames, detect, \d+ frames/s, ETA \d+:\d\d:\d\d", err), err
    # no session lost: the cancelled worker's session was reanalysed again, by another worker
    assert all(json.loads((p / "reanalysis" / "summary.json").read_text())["worker"] != killed for p in paths)
    status = subprocess.run([*CLI, "--status", *map(str, paths)], capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and f"{len(paths)} done" in status.stdout, status.stdout


@pytest.mark.slow
def test_reanalysis_on_slurm_survives_a_cancelled_worker_job(slurm, recorded, local_result, tmp_path):
    """One worker job: the batch can only finish if the cancelled job is replaced by a new one."""
    paths = [fresh(recorded, tmp_path / f"s{i}") for i in range(2)]
    args = ["--detect", "--slurm", "--workers", "1", "--slurm-memory", "2GB", "--slurm-walltime", "00:20:00"]
    proc = start_batch([*args, *map(str, paths)], tmp_path, env=slurm.env)
    try:
        victim, prog = session_in_detection(paths, proc, tmp_path)
        job = environ(prog["pid"]).get("SLURM_JOB_ID")  # the worker was started by SLURM
        assert job is not None and job in slurm.jobs("running"), "the worker is not in a running SLURM job"
        status = subprocess.run([*CLI, "--status", str(victim)], capture_output=True, text=True, timeout=120)
        assert re.search(rf"^running +{re.escape(str(victim))}: detect on .* frames", status.stdout, re.M)
        subprocess.run(["scancel", job], env=slurm.env, check=True, timeout=30)
        check_batch(proc, tmp_path, paths, local_result, f"{prog['host']} pid {prog['pid']}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    ended = slurm.jobs("all")
    assert ended[job] == "CANCELLED" and len(ended) >= 2, ended  # the cancelled job and its replacement
    assert not slurm.jobs(), "the batch left worker jobs queued or running"  # cluster.close cancelled them


@pytest.mark.slow
def test_reanalysis_on_a_scheduler_survives_a_killed_worker(recorded, local_result, tmp_path):
    """``dask scheduler`` + two ``dask worker`` processes; one worker (nanny and worker process) is killed
    mid-session; the scheduler runs that session again on the other."""
    dask = [sys.executable, "-m", "dask"]
    sched_file = tmp_path / "scheduler.json"
    procs: list[subprocess.Popen] = []
    try:
        procs.append(
            subprocess.Popen(
                [*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
                + ["--scheduler-file", str(sched_file)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        deadline = time.monotonic() + 120
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [*dask, "worker", address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        paths = [fresh(recorded, tmp_path / f"s{i}") for i in range(3)]
        proc = start_batch(["--detect", "--scheduler", address, *map(str, paths)], tmp_path)
        procs.append(proc)
        _, prog = session_in_detection(paths, proc, tmp_path)
        group = next(w for w in procs[1:3] if os.getpgid(prog["pid"]) == w.pid)  # the dask worker it is in
        os.killpg(group.pid, signal.SIGKILL)
        check_batch(proc, tmp_path, paths, local_result, f"{prog['host']} pid {prog['pid']}")
    finally:
        for p in reversed(procs):  # the batch (if still running), the workers, the scheduler
            if p.poll() is None:
                if p.args[:3] == CLI[:3]:
                    p.kill()
                else:
                    os.killpg(p.pid, signal.SIGTERM)  # its own process group: the nanny and its worker
                p.wait(timeout=30)


def test_status_from_the_folders(local_result, recorded, tmp_path):
    """done / running / failed with the reason / interrupted / not started, from the folders alone."""
    done = local_result
    running = fresh(recorded, tmp_path / "running")
    (running / PARTIAL_DIR).mkdir()
    t0 = time.time()
    prog = {"host": "node7", "pid": 4242, "attempt": "a", "stage": "detect", "frames_done": 500}
    prog |= {"frames_total": 1500, "t_start": t0 - 6, "t_detect_start": t0 - 5, "t_updated": t0}
    (running / PARTIAL_DIR / "progress.json").write_text(json.dumps(prog))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "session.json").write_text("{not json")
    never = fresh(recorded, tmp_path / "never")
    nothing = tmp_path / "nothing"
    nothing.mkdir()

    st = session_status(running, now=t0 + 1)
    assert st["state"] == "running"
    assert st["detail"] == "detect on node7 pid 4242, 500/1500 frames, 100 frames/s, ETA 0:00:10"
    st = session_status(running, now=t0 + STALE_S + 5)  # nobody rewrote the progress: the worker died
    assert st["state"] == "failed" and st["detail"].startswith("interrupted: the worker (node7 pid 4242)")
    assert session_status(done)["state"] == "done"
    assert session_status(never) == {"state": "not started", "detail": ""}
    assert session_status(nothing)["state"] == "not a session"

    # a batch with a broken session: it fails with its one-line reason, recorded in its folder
    out = subprocess.run([*CLI, "--quiet", "--workers", "1", str(broken)], capture_output=True, text=True)
    assert out.returncode == 1 and "session.json: not valid JSON" in out.stdout
    st = session_status(broken)
    assert st["state"] == "failed" and "session.json: not valid JSON" in st["detail"]

    paths = [done, running, broken, never]
    out = subprocess.run([*CLI, "--status", *map(str, paths)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1  # a failed session
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"done          {done}: re-detected, ")
    assert lines[1].startswith(f"running       {running}: detect on node7 pid 4242, 500/1500 frames")
    assert lines[2].startswith(f"failed        {broken}: InputError: ") and "not valid JSON" in lines[2]
    assert lines[3] == f"not started   {never}"
    assert lines[4] == "1 done, 1 running, 1 failed, 1 not started"
    # reanalysing the failed session again clears its failure (here: the folder is repaired)
    ok = fresh(recorded, tmp_path / "ok")
    (ok / PARTIAL_DIR).mkdir()
    (ok / PARTIAL_DIR / "failed.json").write_text(json.dumps({"error": "X: earlier", "t_failed": t0}))
    assert session_status(ok)["state"] == "failed"
    reanalyze_session(ok, options=Options(analyses=False))
    assert session_status(ok)["state"] == "done" and not (ok / PARTIAL_DIR).exists()
    assert not (ok / "reanalysis" / "progress.json").exists()  # the heartbeat is not part of the result
