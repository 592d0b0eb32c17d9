"""`hydra/launcher=slurm` and `hydra/launcher=local` against a real Slurm cluster and real processes.

The cluster is a real slurmctld + slurmd + munged on localhost, started by scripts/slurm_local.sh for
the session and stopped at its end (docs/slurm.md). A cluster that cannot be installed or started here
(the script's exit status 3, with its reason) is a failure, so that a broken install never passes as a
skip; only BISENET_PL_SKIP_SLURM=1, set on purpose where Slurm cannot be installed, skips them.

A throw-away Hydra app (written into tmp_path, with our conf dir on its search path) checks what our
launcher config turns into on the cluster, in seconds; one test runs the real training entry point.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _slurm import (
    CONF_DIR,
    PARTITION,
    LocalSlurm,
    SlurmUnavailable,
    explain,
    run_sweep,
    start_cluster,
    stop_cluster,
)
from omegaconf import DictConfig

APP = '''
"""A Hydra app that records, per task, where and how Slurm ran it."""
import json
import os
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig

import bisenet_pl.cli.resolvers  # noqa: F401  (the resolvers our launcher configs use, as train.py has them)

KEYS = ["SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_NTASKS", "SLURM_PROCID",
        "SLURM_JOB_PARTITION", "SLURM_CPUS_PER_TASK", "SLURM_RESTART_COUNT", "SLURM_CONF"]


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    out = Path(HydraConfig.get().runtime.output_dir)
    rank = os.environ.get("SLURM_PROCID", "0")
    env = {k: os.environ.get(k) for k in KEYS}
    record = {"x": cfg.x, "pid": os.getpid(), "start": time.time(), "env": env}
    if cfg.mode == "requeue":
        # The first attempt outlives its time limit: only submitit's requeue can finish this job, and it
        # must come back to this same folder.
        attempts = out / "attempts.jsonl"
        first = not attempts.exists()
        with attempts.open("a") as f:
            f.write(json.dumps(record) + "\\n")
        if first:
            time.sleep(600)
    else:
        time.sleep(cfg.sleep_s)
    record["end"] = time.time()
    (out / f"task_{rank}.json").write_text(json.dumps(record))
    return cfg.x


if __name__ == "__main__":
    main()
'''

APP_CONFIG = f"""
# Our conf dir on the search path: `hydra/launcher=slurm` is conf/hydra/launcher/slurm.yaml.
hydra:
  searchpath:
    - file://{CONF_DIR}
# The keys the launcher configs interpolate.
trainer:
  accelerator: cpu
  devices: 1
  num_nodes: 1
x: 0
mode: record
sleep_s: 0
"""

# What every Slurm sweep in these tests needs on a 2-CPU node; the rest comes from slurm.yaml (no GPUs are
# asked for because the trainer runs on CPU).
SMALL_JOB = [
    "hydra/launcher=slurm",
    f"hydra.launcher.partition={PARTITION}",
    "hydra.launcher.cpus_per_task=1",
]


def _write_app(folder: Path) -> None:
    (folder / "conf").mkdir(parents=True)
    (folder / "app.py").write_text(APP)
    (folder / "conf" / "config.yaml").write_text(APP_CONFIG)


def _tasks(job_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(job_dir.glob("task_*.json"))]


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[LocalSlurm]:
    """One cluster for the whole session: it starts in about a second; stopped even if tests fail."""
    try:
        cluster = start_cluster()
    except SlurmUnavailable as err:
        # A cluster that does not start is a failure, never a skip that turns a run green. Only a person
        # who cannot install Slurm (no root, no apt) opts out, by name: BISENET_PL_SKIP_SLURM=1.
        if os.environ.get("BISENET_PL_SKIP_SLURM") != "1":
            pytest.fail(f"no local Slurm cluster ({err}); BISENET_PL_SKIP_SLURM=1 skips these on purpose")
        pytest.skip(f"BISENET_PL_SKIP_SLURM=1: no local Slurm cluster: {err}")
    try:
        yield cluster
    finally:
        stop_cluster(cluster)


# --- no cluster needed --------------------------------------------------------------------------------


def test_slurm_launcher_follows_the_trainer() -> None:
    """One task per device and one node per trainer node, GPUs only for a GPU trainer, requeue on, no
    setup lines: read from our config as the training app composes it (its resolvers registered), so a
    broken interpolation fails here without a cluster."""
    import bisenet_pl.conf  # noqa: F401  (and the signature schemas, as reading pkg://bisenet_pl.conf does)
    from hydra import compose, initialize_config_dir

    import bisenet_pl.cli  # noqa: F401  (registers the resolvers, as `python -m bisenet_pl.train` does)

    def launcher_for(*overrides: str) -> DictConfig:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            return compose("train", overrides=list(overrides), return_hydra_config=True).hydra.launcher

    launcher = launcher_for("hydra/launcher=slurm", "experiment=4x4", "trainer.num_nodes=2")
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    cpu = launcher_for("hydra/launcher=slurm", "experiment=demo", "trainer.devices=2")
    assert (cpu.tasks_per_node, cpu.gpus_per_node) == (2, 0)
    assert launcher_for("hydra/launcher=slurm", "trainer=gpu", "trainer.devices=2").gpus_per_node == 2
    assert launcher.max_num_timeout > 0
    # The USR2 must come early enough to requeue, and never before the job could do any work.
    assert 0 < launcher.signal_delay_s < launcher.timeout_min * 60 / 2
    assert launcher.setup == []
    local = launcher_for("hydra/launcher=local", "experiment=demo")
    assert local._target_.endswith("LocalLauncher")
    assert (local.tasks_per_node, local.gpus_per_node) == (1, 0)


def test_local_launcher_runs_jobs_in_parallel(tmp_path: Path) -> None:
    """`hydra/launcher=local`: each job its own process, both at once (the basic launcher runs them
    one after another in the calling process)."""
    _write_app(tmp_path)
    sweep = tmp_path / "multirun"
    proc = run_sweep(
        ["app.py", "-m", "hydra/launcher=local", "sleep_s=2", "x=1,2", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
        cluster=None,
        timeout=120,
    )
    assert proc.returncode == 0, explain(proc, None, tmp_path)
    (a,), (b,) = _tasks(sweep / "0"), _tasks(sweep / "1")
    assert (a["x"], b["x"]) == (1, 2)
    assert a["pid"] != b["pid"]
    assert a["start"] < b["end"] and b["start"] < a["end"], "the two jobs did not overlap in time"


# --- on the cluster -----------------------------------------------------------------------------------


@pytest.mark.slurm
def test_hydra_sweep_runs_on_slurm(slurm_cluster: LocalSlurm, tmp_path: Path) -> None:
    """A 2-job sweep through our slurm.yaml: one job array, each job 2 srun tasks (trainer.devices=2)
    in its own Hydra job folder, on the partition and with the resources the config asked for."""
    _write_app(tmp_path)
    sweep = tmp_path / "multirun"
    t0 = time.monotonic()
    proc = run_sweep(
        ["app.py", "-m", *SMALL_JOB, "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=2"]
        + ["hydra.launcher.signal_delay_s=30"]
        + ["trainer.devices=2", "x=1,2", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
        cluster=slurm_cluster,
        timeout=120,
    )
    assert proc.returncode == 0, explain(proc, slurm_cluster, tmp_path)
    print(f"2-job Slurm sweep: {time.monotonic() - t0:.1f}s")

    job_ids = set()
    array_ids = set()
    for num, x in ((0, 1), (1, 2)):
        job_dir = sweep / str(num)
        assert (job_dir / ".hydra" / "overrides.yaml").is_file(), explain(proc, slurm_cluster, tmp_path)
        tasks = _tasks(job_dir)
        # tasks_per_node follows trainer.devices: two ranks of the same job, both in the job's folder.
        assert sorted(t["env"]["SLURM_PROCID"] for t in tasks) == ["0", "1"], tasks
        for t in tasks:
            env = t["env"]
            assert t["x"] == x
            assert env["SLURM_NTASKS"] == "2"
            assert env["SLURM_JOB_PARTITION"] == PARTITION
            assert env["SLURM_CPUS_PER_TASK"] == "1"
            assert env["SLURM_CONF"] == slurm_cluster.env["SLURM_CONF"]
        assert len({t["env"]["SLURM_JOB_ID"] for t in tasks}) == 1
        job_ids.add(tasks[0]["env"]["SLURM_JOB_ID"])
        array_ids.add(tasks[0]["env"]["SLURM_ARRAY_JOB_ID"])
    assert len(job_ids) == 2 and len(array_ids) == 1, "a sweep is one job array of separate jobs"

    # The batch script submitit wrote from our config (the flags Slurm was given).
    (script,) = sweep.glob(".submitit/*/*_submission.sh")
    flags = set(script.read_text().splitlines())
    expected = {"--ntasks-per-node=2", "--nodes=1", "--gpus-per-node=0", "--cpus-per-task=1", "--mem=1GB"}
    expected |= {f"--partition={PARTITION}", "--time=2", "--signal=USR2@30", "--array=0-1%2"}
    assert {f"#SBATCH {f}" for f in expected} <= flags, script.read_text()


@pytest.mark.slurm
def test_gpu_job_on_a_cluster_without_gpus_fails_at_once(slurm_cluster: LocalSlurm, tmp_path: Path) -> None:
    """A GPU trainer asks for GPUs (gpus_per_node follows trainer.devices); this node has none, so sbatch
    must refuse the sweep at submission with SLURM's reason, not leave it pending forever."""
    _write_app(tmp_path)
    proc = run_sweep(
        ["app.py", "-m", *SMALL_JOB, "trainer.accelerator=gpu", "trainer.devices=1", "x=1,2"]
        + [f"hydra.sweep.dir={tmp_path / 'multirun'}"],
        cwd=tmp_path,
        cluster=slurm_cluster,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "Invalid generic resource" in proc.stderr, explain(proc, slurm_cluster, tmp_path)


@pytest.mark.slurm
@pytest.mark.slow
def test_timed_out_job_is_requeued_into_its_folder(slurm_cluster: LocalSlurm, tmp_path: Path) -> None:
    """slurm.yaml's requeue: the job outlives its 1-minute limit, submitit catches USR2, requeues it, and
    the second attempt (same job id, SLURM_RESTART_COUNT=1) runs in the same job folder and finishes.
    With submitit's default max_num_timeout=0 the sweep would fail instead. About a minute."""
    _write_app(tmp_path)
    sweep = tmp_path / "multirun"
    proc = run_sweep(
        ["app.py", "-m", *SMALL_JOB, "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=1"]
        + ["hydra.launcher.signal_delay_s=45"]
        + ["mode=requeue", "x=7", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
        cluster=slurm_cluster,
        timeout=150,
    )
    assert proc.returncode == 0, explain(proc, slurm_cluster, tmp_path)
    attempts = [json.loads(line) for line in (sweep / "0" / "attempts.jsonl").read_text().splitlines()]
    assert len(attempts) == 2, attempts
    first, second = (a["env"] for a in attempts)
    assert first["SLURM_JOB_ID"] == second["SLURM_JOB_ID"]
    assert first["SLURM_RESTART_COUNT"] in (None, "0") and second["SLURM_RESTART_COUNT"] == "1"
    (task,) = _tasks(sweep / "0")
    assert task["x"] == 7
    assert [p.name for p in sweep.glob("[0-9]*")] == ["0"], "the requeued job made a new folder"


@pytest.mark.slurm
@pytest.mark.slow
def test_training_demo_sweep_on_slurm(slurm_cluster: LocalSlurm, tmp_path: Path) -> None:
    """The real entry point: a 2-job demo sweep at toy size through `hydra/launcher=slurm`, data and
    outputs under tmp_path; each job folder must hold its results.json. `ckpt_path=last` is the
    documented requeue recipe and must be harmless on a first run."""
    proc = run_sweep(
        ["-m", "bisenet_pl.train", "-m", "experiment=demo", "debug=limit", *SMALL_JOB]
        + ["hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=10", "hydra.launcher.signal_delay_s=60"]
        + ["trainer.max_steps=2", "trainer.val_check_interval=2", "module.warmup_steps=1"]
        + ["trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "data.num_workers=0"]
        + ["ckpt_path=last", f"paths.root_dir={tmp_path}", "seed=1,2"],
        cwd=tmp_path,
        cluster=slurm_cluster,
        timeout=240,
        # Two jobs share two cores: one thread each keeps them from fighting (and other users' work).
        OMP_NUM_THREADS="1",
        WANDB_MODE="offline",
    )
    assert proc.returncode == 0, explain(proc, slurm_cluster, tmp_path)
    (sweep,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    for num, seed in ((0, 1), (1, 2)):
        job_dir = sweep / str(num)
        results = job_dir / "results.json"
        assert results.is_file(), f"{job_dir}: {sorted(p.name for p in job_dir.iterdir())}"
        data = json.loads(results.read_text())
        assert data["global_step"] == 2
        assert Path(data["run_dir"]) == job_dir
        assert f"seed={seed}" in data["overrides"]
        assert (job_dir / "checkpoints" / "last.ckpt").is_file()
