"""A real one-node SLURM cluster for tests: munged, slurmctld and slurmd on localhost, in a temp folder.

Everything the daemons write (munge key and socket, slurm.conf, state, spool, logs, pid files) lives under
the folder given; the ports are picked by the OS. The daemons run in the foreground as children of the
test process (``-F`` / ``-D``), so stopping them is stopping processes this module started, by their pid.
No cgroups: ``proctrack/linuxproc`` and ``task/none``, so it runs in a container. Needs root (slurmd
starts jobs as the submitting user) and the Debian packages ``slurm-wlm munge`` (scripts/setup.sh).

    with SlurmCluster(tmp) as cluster:
        subprocess.run(["sbatch", ...], env=cluster.env)
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")


def why_not() -> str | None:
    """Why a cluster cannot start here (one line), or None."""
    missing = [p for p in PROGRAMS if shutil.which(p) is None]
    if missing:
        return (
            f"{', '.join(missing)} not found: install the Debian packages slurm-wlm munge (scripts/setup.sh)"
        )
    if os.geteuid() != 0:
        return "a one-node SLURM cluster needs root (slurmd starts jobs as the submitting user)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SlurmError(RuntimeError):
    pass


class SlurmCluster:
    """slurmctld + slurmd (one node, ``cpus`` CPUs, one partition ``debug``) with its own munged."""

    def __init__(self, root: Path, cpus: int = 4) -> None:
        self.root = Path(root)
        self.cpus = cpus
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started: list[subprocess.Popen[bytes]] = []  # every daemon started, running or not

    # ------------------------------------------------------------------ start / stop
    def __enter__(self) -> SlurmCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout_s: float = 60.0) -> None:
        why = why_not()
        if why:
            raise SlurmError(why)
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)  # munged refuses a key or socket in a folder others may write to
        munge = self.root / "munge"
        munge.mkdir(mode=0o700, exist_ok=True)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        for d in ("state", "spool", "log"):
            (self.root / d).mkdir(exist_ok=True)
        self._start(
            "munged",
            [
                "munged",
                "--foreground",
                "--force",  # the temp folder's parents (/tmp) are world-writable with the sticky bit
                f"--socket={self.munge_socket}",
                f"--key-file={key}",
                f"--pid-file={munge / 'munged.pid'}",
                f"--log-file={self.root / 'log' / 'munged.log'}",
                f"--seed-file={munge / 'munged.seed'}",
            ],
        )
        self._wait(self.munge_socket.exists, timeout_s, "munged to open its socket", "munged")
        (self.root / "plugstack.conf").write_text("")
        self.conf.write_text(self._slurm_conf())
        self._start("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._start("slurmd", ["slurmd", "-D", "-N", self.node, "-f", str(self.conf)])
        self._wait(self._node_idle, timeout_s, "the node to be idle", "slurmd")

    def stop(self, timeout_s: float = 30.0) -> None:
        """Cancel every job, wait for their processes to end, then stop the daemons (slurmd, slurmctld,
        munged). Any job process still alive then (found by this cluster's SLURM_CONF in its environment)
        is killed by its pid: nothing is left running."""
        if "slurmctld" in self._procs and self._procs["slurmctld"].poll() is None:
            subprocess.run(
                ["scancel", "--full", "--user", "root"], env=self.env, capture_output=True, timeout=30
            )
            end = time.monotonic() + timeout_s
            while time.monotonic() < end and (self.jobs() or self.job_processes()):
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            p = self._procs.pop(name, None)
            if p is None:
                continue
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=10)
        for pid in self.job_processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _start(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.out", "wb")  # noqa: SIM115 (closed with the process)
        try:
            self._procs[name] = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
            self.started.append(self._procs[name])
        finally:
            log.close()

    def _wait(self, ready, timeout_s: float, what: str, daemon: str) -> None:  # type: ignore[no-untyped-def]
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            for name, p in self._procs.items():
                if p.poll() is not None:
                    raise SlurmError(
                        f"{name} exited with {p.returncode} while waiting for {what}: {self.log(name)}"
                    )
            if ready():
                return
            time.sleep(0.3)
        raise SlurmError(f"timed out after {timeout_s:.0f} s waiting for {what}: {self.log(daemon)}")

    def log(self, name: str, lines: int = 15) -> str:
        """The last lines of a daemon's log (for error messages)."""
        text = ""
        for f in (self.root / "log" / f"{name}.log", self.root / "log" / f"{name}.out"):
            if f.exists():
                text += f.read_text(errors="replace")
        return " | ".join(text.strip().splitlines()[-lines:])

    def _slurm_conf(self) -> str:
        mem_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        r = self.root
        return f"""\
ClusterName=deepbehavior-test
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CredType=cred/munge
StateSaveLocation={r / "state"}
SlurmdSpoolDir={r / "spool"}
SlurmctldPidFile={r / "slurmctld.pid"}
SlurmdPidFile={r / "slurmd.pid"}
SlurmctldLogFile={r / "log" / "slurmctld.log"}
SlurmdLogFile={r / "log" / "slurmd.log"}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
MinJobAge=600
InactiveLimit=0
PlugStackConfig={r / "plugstack.conf"}
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""

    # ------------------------------------------------------------------ queries
    def _node_idle(self) -> bool:
        r = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%T"], env=self.env, capture_output=True, text=True, timeout=30
        )
        return r.returncode == 0 and r.stdout.strip() in ("idle", "mixed", "allocated")

    def jobs(self, states: str | None = None) -> dict[str, str]:
        """{job id: state} of the jobs in ``states`` (``squeue -t``: e.g. ``running``, ``all`` for ended
        jobs too until ``MinJobAge``); default: those pending, running or ending."""
        r = subprocess.run(
            ["squeue", "-h", "-o", "%i %T", *(["-t", states] if states else [])],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if r.returncode != 0:
            return {}
        return dict(line.split() for line in r.stdout.splitlines() if line.strip())

    def job_processes(self) -> list[int]:
        """Pids of processes started by this cluster's jobs (their environment names its SLURM_CONF)."""
        mark = f"SLURM_CONF={self.conf}".encode()
        pids = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit() or int(d.name) == os.getpid():
                continue
            try:
                env = (d / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if mark in env and any(e.startswith(b"SLURM_JOB_ID=") for e in env):
                pids.append(int(d.name))
        return pids
