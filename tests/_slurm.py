"""Helpers for tests/test_slurm.py: a real one-node Slurm cluster, started by scripts/slurm_local.sh.

Kept out of the test module so that the cluster handling (start, stop, skip reasons, diagnostics when a
sweep hangs) reads as one piece, and the tests only say what they submit and what they expect back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm_local.sh"
CONF_DIR = REPO / "conf"
#: The partition scripts/slurm_local.sh creates; the tests name it so that `partition` is exercised.
PARTITION = "local"
#: scripts/slurm_local.sh's exit status for "Slurm cannot be installed or started here" (skip, not fail).
EXIT_UNAVAILABLE = 3


class SlurmUnavailable(RuntimeError):
    """Slurm cannot be installed or started on this machine (not root, no apt-get, no free port)."""


@dataclass
class LocalSlurm:
    """A running cluster: its folder and the environment its clients (sbatch, submitit, Hydra) need."""

    folder: Path
    env: dict[str, str] = field(default_factory=dict)

    def client_env(self, **extra: str) -> dict[str, str]:
        """The caller's environment plus SLURM_CONF; sbatch exports it, so the jobs get it too."""
        env = dict(os.environ)
        env.update(self.env)
        env.update(extra)
        return env

    def diagnostics(self, *folders: Path) -> str:
        """What to read when a sweep failed or hung: the queue, the daemons' logs and submitit's logs."""
        parts = []
        for cmd in (["squeue", "-a"], ["sinfo", "-N", "-l"]):
            try:
                out = subprocess.run(
                    cmd, env=self.client_env(), capture_output=True, text=True, timeout=10, check=False
                )
                parts.append(f"$ {' '.join(cmd)}\n{out.stdout}{out.stderr}")
            except (OSError, subprocess.TimeoutExpired) as err:
                parts.append(f"$ {' '.join(cmd)}: {err}")
        logs = [self.folder / "log" / "slurmctld.log", self.folder / "log" / "slurmd.log"]
        for folder in folders:
            logs += sorted(folder.glob("**/.submitit/*/*_log.*"))
        for log in logs:
            if log.is_file():
                tail = log.read_text(errors="replace").splitlines()[-15:]
                parts.append(f"--- {log} (end)\n" + "\n".join(tail))
        return "\n".join(parts)


#: Test clusters live in /tmp/<PREFIX>*; OWNER names the pytest process that started each one.
PREFIX = "bisenet_pl_slurm_test_"
OWNER = "owner.pid"


def reap_stale_clusters() -> list[Path]:
    """Stop the clusters of earlier test sessions that died without their teardown (killed, Ctrl+C twice).

    Their daemons would keep ports 6817/6818 forever. Only clusters whose owning pytest process is gone
    are stopped, so another session running right now (another engineer's `make test`) keeps its own.
    """
    reaped = []
    for folder in Path("/tmp").glob(f"{PREFIX}*"):
        try:
            owner = int((folder / OWNER).read_text())
        except (OSError, ValueError):
            continue
        if Path(f"/proc/{owner}").exists():
            continue
        stop_cluster(LocalSlurm(folder=folder))
        reaped.append(folder)
    return reaped


def start_cluster() -> LocalSlurm:
    """Start a private cluster in a fresh folder under /tmp.

    A private folder, not the script's default, so that a developer's own cluster and a second test
    session (another engineer's `make test`) are never reused or stopped by this one; the script picks
    free ports for each. /tmp rather than pytest's tmp_path: munged wants every parent folder of its
    socket searchable by others, and pytest's base folder is 0700.
    """
    if not SCRIPT.is_file():
        raise RuntimeError(f"{SCRIPT} is missing")
    reap_stale_clusters()
    folder = Path(tempfile.mkdtemp(prefix=PREFIX, dir="/tmp"))
    proc = subprocess.run(
        ["bash", str(SCRIPT), "start", str(folder)], capture_output=True, text=True, timeout=300, check=False
    )
    if proc.returncode == EXIT_UNAVAILABLE:
        shutil.rmtree(folder, ignore_errors=True)
        reason = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "no reason given"
        raise SlurmUnavailable(reason)
    if proc.returncode != 0:
        raise RuntimeError(
            f"scripts/slurm_local.sh start failed (exit {proc.returncode}); "
            f"logs in {folder}/log\n{proc.stderr}"
        )
    (folder / OWNER).write_text(str(os.getpid()))
    env: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export ") :].partition("=")
            env[key] = value
    if "SLURM_CONF" not in env:
        raise RuntimeError(f"the script printed no `export SLURM_CONF=` line:\n{proc.stdout}\n{proc.stderr}")
    return LocalSlurm(folder=folder, env=env)


def stop_cluster(cluster: LocalSlurm) -> str:
    """Stop the daemons (cancelling leftover jobs) and remove the folder; returns the script's stderr."""
    cmd = ["bash", str(SCRIPT), "stop", str(cluster.folder)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode == 0:
        shutil.rmtree(cluster.folder, ignore_errors=True)
    return proc.stderr


def run_sweep(
    args: list[str], cwd: Path, cluster: LocalSlurm | None, timeout: float, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run `python <args>` (a Hydra multirun) and wait for it, with a deadline.

    Without accounting, submitit never sees a job that died without writing its result file, so a broken
    job would block the sweep forever: the deadline turns that into a failure with the cluster's view.
    """
    full_env = cluster.client_env(**env) if cluster else {**os.environ, **env}
    full_env.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        return subprocess.run(
            [sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as err:
        out = err.stdout.decode(errors="replace") if isinstance(err.stdout, bytes) else err.stdout or ""
        where = cluster.diagnostics(cwd) if cluster else ""
        raise AssertionError(f"sweep did not finish in {timeout:.0f}s:\n{out[-3000:]}\n{where}") from None


def explain(proc: subprocess.CompletedProcess[str], cluster: LocalSlurm | None, *folders: Path) -> str:
    """A failure message: the sweep's own output, then the cluster's view of it."""
    where = cluster.diagnostics(*folders) if cluster else ""
    out, err = proc.stdout[-3000:], proc.stderr[-5000:]
    return f"exit {proc.returncode}\n--- stdout\n{out}\n--- stderr\n{err}\n{where}"
