"""A real single-node SLURM cluster for tests: Debian's ``munge``, ``slurmctld`` and ``slurmd`` on this host.

``with slurm_cluster(tmp_path) as env:`` starts MUNGE (if it is not running) and a controller and a
compute daemon whose configuration, state, spool and logs all live under ``tmp_path``; ``env`` is
``os.environ`` plus ``SLURM_CONF``, so ``sbatch``, ``squeue`` and submitit's SLURM executor (Hydra's
``hydra/launcher=submitit_slurm``) talk to it. On exit both daemons are stopped.

The configuration is the smallest that runs jobs as root on a machine without systemd or cgroups:
``SlurmUser=root``, ``ProctrackType=proctrack/linuxproc``, ``TaskPlugin=task/none``, no accounting
(submitit then learns that a job ended from its result file; it logs that ``sacct`` is unavailable),
one node with this machine's CPUs in one partition, ``local``. Install the daemons with
``apt-get install slurmctld slurmd munge slurm-client`` (``.ci/run`` does).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo")
PARTITION = "local"


def missing() -> list[str]:
    """The SLURM / MUNGE programs this machine lacks (searched on ``PATH`` and in ``/usr/sbin``)."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin"
    return [name for name in DAEMONS if shutil.which(name, path=path) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _munge_answers() -> bool:
    return subprocess.run(["munge", "-n"], capture_output=True, check=False).returncode == 0


def _start_munge() -> None:
    """Start ``munged`` as the munge user unless a daemon already answers.

    Tests on several pytest-xdist workers call this at once: an exclusive lock on a file beside
    the daemon's socket lets one start it while the others wait and then find it answering.

    Raises:
        RuntimeError: ``munged`` failed to start (its output is quoted) or does not answer in 10 s.
    """
    run_dir = Path("/run/munge")
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(Path(tempfile.gettempdir()) / "rewardlab-munged.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _munge_answers():
            return
        shutil.chown(run_dir, "munge", "munge")
        started = subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], capture_output=True, text=True, check=False)
        if started.returncode != 0:
            raise RuntimeError(f"munged failed to start (exit {started.returncode}): {started.stderr.strip() or started.stdout.strip()}")
        deadline = time.time() + 10
        while not _munge_answers():
            if time.time() > deadline:
                raise RuntimeError("munged started but does not answer `munge -n` within 10 s")
            time.sleep(0.1)


def _config(root: Path) -> str:
    host = socket.gethostname()
    return "\n".join(
        [
            "ClusterName=rewardlab-test",
            f"SlurmctldHost={host}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            f"StateSaveLocation={root / 'state'}",
            f"SlurmdSpoolDir={root / 'spool'}",
            f"SlurmctldPidFile={root / 'slurmctld.pid'}",
            f"SlurmdPidFile={root / 'slurmd.pid'}",
            f"SlurmctldLogFile={root / 'slurmctld.log'}",
            f"SlurmdLogFile={root / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "MpiDefault=none",
            "ReturnToService=2",
            "SchedulerParameters=sched_interval=1",
            f"NodeName={host} CPUs={os.cpu_count()} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


@contextlib.contextmanager
def slurm_cluster(root: Path, timeout_s: float = 30.0) -> Iterator[dict[str, str]]:
    """Run a one-node SLURM cluster with its files under ``root`` for the ``with`` block.

    Args:
        root: Directory for ``slurm.conf``, ``cgroup.conf``, state, spool and the daemons' logs.
        timeout_s: How long to wait for the node to be ``idle`` (ready for jobs).

    Yields:
        The environment for clients: ``os.environ`` with ``SLURM_CONF`` set.

    Raises:
        RuntimeError: A program is missing (:func:`missing`), or the node is not ready in time
            (the daemons' logs are quoted).
    """
    if absent := missing():
        raise RuntimeError(f"SLURM is not installed here (missing {', '.join(absent)}): apt-get install slurmctld slurmd munge slurm-client")
    root.mkdir(parents=True, exist_ok=True)
    (root / "state").mkdir(exist_ok=True)
    (root / "spool").mkdir(exist_ok=True)
    conf = root / "slurm.conf"
    conf.write_text(_config(root))
    (root / "cgroup.conf").write_text("CgroupAutomount=no\n")
    env = dict(os.environ, SLURM_CONF=str(conf))
    _start_munge()
    started: list[Path] = []
    try:
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([f"/usr/sbin/{daemon}"], env=env, check=True, capture_output=True)
            started.append(root / f"{daemon}.pid")
        deadline = time.time() + timeout_s
        while True:
            state = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True, check=False)
            if state.stdout.strip() == "idle":
                break
            if time.time() > deadline:
                logs = "".join((root / f"{d}.log").read_text()[-2000:] for d in ("slurmctld", "slurmd") if (root / f"{d}.log").exists())
                raise RuntimeError(f"the SLURM node is not idle after {timeout_s:.0f} s (sinfo: {state.stdout.strip()!r} {state.stderr.strip()!r}):\n{logs}")
            time.sleep(0.2)
        yield env
    finally:
        pids = []
        for pid_file in reversed(started):
            with contextlib.suppress(OSError, ValueError):
                pids.append(int(pid_file.read_text().strip()))
                os.kill(pids[-1], 15)
        deadline = time.time() + 10  # wait for them, so that the next cluster finds its ports free
        while any(_alive(pid) for pid in pids) and time.time() < deadline:
            time.sleep(0.1)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, which nobody reaps where PID 1 is not an init, counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
