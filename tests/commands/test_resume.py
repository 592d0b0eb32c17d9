"""Resuming, as a user of long runs meets it: kills, restarts, typos, two experiments in one SLURM job.

Every `train` here runs under a guard that fails the process on any `torch.load` without
`weights_only=True` (Lightning's loads included), so the resume paths after SIGKILL, SIGTERM and SIGINT
are proven to read checkpoints without unpickling code.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _shared import cli_env, tiny_train_args, wait_for

from bisenet_pl.errors import ConfigError
from bisenet_pl.training.run_folder import RunLock

#: `python -c GUARD <train args>`: bisenet_pl.train with torch.load refusing weights_only != True.
GUARD = """
import runpy, sys, torch
_load = torch.load
def guarded(*args, **kwargs):
    if kwargs.get("weights_only") is not True:
        raise SystemExit(f"torch.load without weights_only=True: {args[:1]}")
    return _load(*args, **kwargs)
torch.load = guarded
sys.argv = ["bisenet_pl.train", *sys.argv[1:]]
runpy.run_module("bisenet_pl.train", run_name="__main__")
"""


def _train(args: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", GUARD, *args],
        cwd=cwd,
        env=env or cli_env(),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
    )


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    log = cwd / "last_command.log"
    proc = _train(args, cwd, log, env)
    proc.wait(timeout=400)
    return proc.returncode, log.read_text()


def _step(path: Path) -> int:
    """The stored step of a checkpoint; -1 while it does not exist. A file that exists but does not load
    is an error, never a -1: checkpoints are written atomically, so a half-written one is a bug."""
    if not path.exists():
        return -1
    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"])


def _stored(run: Path) -> dict[Path, int]:
    """Every checkpoint of the run folder with its stored step (read here, not by the package's code)."""
    paths = [*(run / "checkpoints").glob("*.ckpt"), *run.glob("hpc_ckpt_*.ckpt")]
    return {p: _step(p) for p in paths}


def _assert_resumed_from_highest(out: str, stored: dict[Path, int]) -> int:
    """The log names the one checkpoint it resumes from: one holding the highest stored step of `stored`
    (taken before the resume started). Returns that step."""
    found = re.findall(r"resuming from (\S+) \(step (\d+),", out)
    assert len(found) == 1, f"expected one 'resuming from' line, found {found}:\n{out[-3000:]}"
    path, step = Path(found[0][0]), int(found[0][1])
    highest = max(stored.values())
    assert step == highest and stored.get(path) == highest, (
        f"resumed from {path} (step {step}); the stored steps were { {p.name: s for p, s in stored.items()} }"
    )
    return step


def _stop_when(proc: subprocess.Popen, last: Path, above: int, signum: int) -> None:
    """Send `signum` once `last` holds a step above `above` (a checkpoint every 5 steps)."""
    try:
        wait_for(lambda: _step(last) > above, timeout=300, proc=proc)
        proc.send_signal(signum)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_kill_resume_interrupt_resume_finish_keeps_one_last_ckpt(tiny_data, tmp_path):
    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    last, interrupted = ckpts / "last.ckpt", ckpts / "last-interrupted.ckpt"
    args = tiny_train_args(
        tiny_data,
        tmp_path,
        "trainer.max_steps=80",
        "trainer.val_check_interval=80",
        "callbacks.last_checkpoint.every_n_train_steps=5",
        "callbacks.iter_checkpoint.every_n_train_steps=80",
        f"hydra.run.dir={run}",
    )
    # 1. SIGKILL: nothing runs on the way out; last.ckpt (every 5 steps) is what survives
    proc = _train(args, tmp_path, tmp_path / "1.log")
    _stop_when(proc, last, 0, signal.SIGKILL)
    killed_at = _step(last)
    assert killed_at >= 5 and killed_at % 5 == 0 and not interrupted.exists()

    # 2. resume, then SIGTERM: the interrupt checkpoint is newer in steps than last.ckpt
    proc = _train([f"resume={run}"], tmp_path, tmp_path / "2.log")
    _stop_when(proc, last, killed_at, signal.SIGTERM)
    out = (tmp_path / "2.log").read_text()
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    assert f"resuming from {last} (step {killed_at}" in out
    term_at = _step(interrupted)
    assert term_at >= _step(last) > killed_at
    assert sorted(p.name for p in ckpts.iterdir()) == ["last-interrupted.ckpt", "last.ckpt"]  # no last-v1

    # a failed start (a typo in ckpt_path) in between writes nothing: no step-0 "interrupted" file
    code, out = _run([*args[:-1], f"hydra.run.dir={run}", "ckpt_path=checkpoints/lats.ckpt"], tmp_path)
    assert code == 2 and "lats.ckpt does not exist" in out and "Traceback" not in out
    assert _step(interrupted) == term_at

    # 3. resume from the higher stored step, then Ctrl-C (SIGINT) takes the same path as SIGTERM
    stored = _stored(run)
    proc = _train([f"resume={run}"], tmp_path, tmp_path / "3.log")
    wait_for(lambda: "resuming from" in (tmp_path / "3.log").read_text(), 120, proc)
    _stop_when(proc, last, term_at, signal.SIGINT)
    out = (tmp_path / "3.log").read_text()
    assert proc.returncode == 128 + signal.SIGINT, out[-3000:]
    assert _assert_resumed_from_highest(out, stored) == term_at
    assert f"resume={run}" in out and "SIGINT: stopped at step" in out
    int_at = _step(interrupted)
    assert int_at > term_at

    # 4. resume to the end: one last.ckpt with the final step, results of the final weights
    stored = _stored(run)
    assert len(stored) == 2  # last.ckpt and last-interrupted.ckpt: the choice below means something
    code, out = _run([f"resume={run}"], tmp_path)
    assert code == 0, out[-3000:]
    _assert_resumed_from_highest(out, stored)
    assert _step(last) == 80 and _step(ckpts / "iter_000080.ckpt") == 80
    assert not list(ckpts.glob("last-v*.ckpt"))
    assert json.loads((run / "results.json").read_text())["global_step"] == 80
    for log in tmp_path.glob("*.log"):
        assert "`weights_only` was not set" not in log.read_text()


def test_a_fresh_start_in_a_run_folder_is_refused_and_changes_nothing(trained_run, tiny_data, tmp_path):
    before = {p.name: p.read_bytes() for p in (trained_run / "run_config.yaml", trained_run / "results.json")}
    args = tiny_train_args(tiny_data, tmp_path, "module.lr=0.01", "seed=7", f"hydra.run.dir={trained_run}")
    code, out = _run(args, tmp_path)
    assert code == 2 and "Traceback" not in out
    assert "already holds" in out and f"resume={trained_run}" in out
    assert {p: (trained_run / p).read_bytes() for p in before} == before
    # a resume that would change the recipe is refused, naming the key
    code, out = _run([f"resume={trained_run}", "module.lr=0.01"], tmp_path)
    assert code == 2 and "module.lr: saved 0.05, asked 0.01" in out


def test_two_runs_in_one_slurm_job_get_two_folders_and_a_requeue_continues_its_own(tiny_data, tmp_path):
    env = cli_env(SLURM_JOB_ID="4242", SLURM_JOB_NAME="batch")
    common = tiny_train_args(tiny_data, tmp_path, "trainer.val_check_interval=4")
    code, first_out = _run([*common, "trainer.max_steps=4"], tmp_path, env)
    assert code == 0, first_out[-3000:]
    code, out = _run([*common, "trainer.max_steps=4", "module.lr=0.01", "seed=3"], tmp_path, env)
    assert code == 0, out[-3000:]
    assert "Restored all states" not in out
    folders = sorted((tmp_path / "outputs" / "train" / "runs").glob("slurm-4242-*"))
    assert len(folders) == 2
    for folder in folders:
        assert _step(folder / "checkpoints" / "last.ckpt") == 4
    # the first run's job requeued (SLURM_RESTART_COUNT=1): back in its own folder, from its own step
    requeue = cli_env(SLURM_JOB_ID="4242", SLURM_JOB_NAME="batch", SLURM_RESTART_COUNT="1")
    code, out = _run([*common, "trainer.max_steps=4"], tmp_path, requeue)
    assert code == 0, out[-3000:]
    (mine,) = [f for f in folders if f"run folder: {f}" in first_out]
    assert f"resuming from {mine / 'checkpoints' / 'last.ckpt'} (step 4" in out


def test_a_locked_folder_refuses_a_second_trainer_and_stale_temporaries_go(trained_run, tmp_path):
    trained_run = Path(shutil.copytree(trained_run, tmp_path / "copy"))  # the shared run stays as it is
    stale = trained_run / "checkpoints" / ".last.ckpt.k3j2.tmp"
    stale.write_bytes(b"half of a checkpoint")
    with RunLock(trained_run):
        code, out = _run([f"resume={trained_run}"], tmp_path)
    assert code == 2 and "is being trained by pid" in out and "Traceback" not in out
    assert stale.exists()  # the refused start touched nothing
    code, out = _run([f"resume={trained_run}"], tmp_path)
    assert code == 0, out[-3000:]
    assert not stale.exists()


def _children(pid: int) -> list[int]:
    """The pids `pid` forked (its DataLoader workers), from /proc."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = task / "children"
        if children.exists():
            found += [int(c) for c in children.read_text().split()]
    return found


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "State:\tZ" not in status.read_text()
    except OSError:
        return False


def test_the_run_lock_dies_with_its_holder_not_with_the_children_it_forked(tmp_path):
    # A trainer takes the lock and forks a child that keeps the lock file's descriptor (as DataLoader
    # workers do); SIGKILL the trainer: the folder is free at once although the child still runs.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys, time\n"
            "from bisenet_pl.training.run_folder import RunLock\n"
            f"RunLock({str(tmp_path)!r}).acquire()\n"
            "if os.fork() == 0:\n"
            "    time.sleep(60); os._exit(0)\n"
            "print('locked', flush=True); time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    (child,) = _children(holder.pid)
    try:
        with pytest.raises(ConfigError, match=f"being trained by pid {holder.pid} right now"):
            RunLock(tmp_path).acquire()
        holder.kill()
        holder.wait()
        assert _alive(child), "the forked child should outlive its parent for this test to mean anything"
        RunLock(tmp_path).acquire().release()  # no sleep, no retry
    finally:
        os.kill(child, signal.SIGKILL)


def test_a_run_killed_with_workers_resumes_at_once_and_finishes(tiny_data, tmp_path):
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    args = tiny_train_args(
        tiny_data,
        tmp_path,
        "data.num_workers=2",
        "trainer.max_steps=30",
        "trainer.val_check_interval=30",
        "callbacks.last_checkpoint.every_n_train_steps=5",
        f"hydra.run.dir={run}",
    )
    proc = _train(args, tmp_path, tmp_path / "killed.log")
    try:
        wait_for(lambda: _step(last) >= 5, timeout=300, proc=proc)
        workers = _children(proc.pid)
        proc.kill()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = _step(last)
    assert 5 <= killed_at < 30 and len(workers) >= 2
    code, out = _run([f"resume={run}"], tmp_path)  # immediately: the orphaned workers may still run
    assert code == 0, out[-3000:]
    assert "being trained by" not in out
    assert f"resuming from {last} (step {killed_at}" in out
    assert _step(last) == 30


def test_a_diverging_run_stops_at_the_step_and_keeps_finite_checkpoints(tiny_data, tmp_path):
    run = tmp_path / "run"
    args = tiny_train_args(
        tiny_data,
        tmp_path,
        "module.lr=1e6",
        "trainer.max_steps=30",
        "callbacks.last_checkpoint.every_n_train_steps=1",
        f"hydra.run.dir={run}",
    )
    code, out = _run(args, tmp_path)
    assert code == 2 and "Traceback" not in out, out[-3000:]
    # at the step the loss or the weights turn non-finite, whichever comes first
    assert "training diverged" in out and ("the loss of" in out or "NaN or infinite" in out)
    assert not (run / "results.json").exists()
    for ckpt in (run / "checkpoints").glob("*.ckpt"):
        sd = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
        assert all(bool(t.isfinite().all()) for t in sd.values() if t.is_floating_point())


def test_a_smoke_run_shorter_than_the_warmup_trains_with_a_warning(tiny_data, tmp_path):
    args = tiny_train_args(tiny_data, tmp_path, "trainer.max_steps=2", "module.warmup_steps=1000")
    code, out = _run(args, tmp_path)
    assert code == 0, out[-3000:]
    assert "warmup_steps=1000 >= max_steps=2" in out


def test_a_truncated_run_config_is_one_message(trained_run, tmp_path):
    run = Path(shutil.copytree(trained_run, tmp_path / "copy"))
    text = (run / "run_config.yaml").read_text()
    (run / "run_config.yaml").write_text(
        text[: len(text) // 2] + "\n  - [unclosed"
    )  # a kill mid-write, pre-fix
    code, out = _run([f"resume={run}"], tmp_path)
    assert code == 2 and "Traceback" not in out
    assert f"{run / 'run_config.yaml'} cannot be read" in out


def test_kill_9_at_random_moments_never_loses_a_loadable_resume_point(tiny_data, tmp_path):
    """Four SIGKILLs at random moments (a 118 MB checkpoint every 3 steps, so some land mid-write):
    every time, each checkpoint left behind loads with weights_only=True and the resume continues from
    the highest stored step; the run then finishes with one last.ckpt at the final step."""
    import random

    rng = random.Random(0)
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    args = tiny_train_args(
        tiny_data,
        tmp_path,
        "trainer.max_steps=60",
        "trainer.val_check_interval=60",
        "callbacks.last_checkpoint.every_n_train_steps=3",
        "callbacks.iter_checkpoint.every_n_train_steps=60",
        f"hydra.run.dir={run}",
    )
    steps = [0]
    for attempt in range(4):
        stored = _stored(run)
        log = tmp_path / f"k{attempt}.log"
        proc = _train(args if attempt == 0 else [f"resume={run}"], tmp_path, log)
        try:
            wait_for(lambda: _step(last) > steps[-1], timeout=300, proc=proc)
            time.sleep(rng.uniform(0.0, 1.0))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        if attempt > 0:  # every resume, the intermediate ones too, starts from the highest stored step
            assert _assert_resumed_from_highest(log.read_text(), stored) == steps[-1]
        for ckpt in (run / "checkpoints").glob("*.ckpt"):
            try:
                _step(ckpt)
            except Exception as err:
                raise AssertionError(f"{ckpt} does not load after kill {attempt}: {err}") from err
        steps.append(_step(last))
        assert steps[-1] > steps[-2]
    stored = _stored(run)
    code, out = _run([f"resume={run}"], tmp_path)
    assert code == 0, out[-3000:]
    # a stale temporary (a kill mid-write) may be reported and removed; the resume point is still the
    # highest stored step, whatever else the log says
    assert _assert_resumed_from_highest(out, stored) == steps[-1]
    assert _step(last) == 60 and not list((run / "checkpoints").glob(".*.tmp"))
