"""Test-wide settings: no network, no W&B account, quiet libraries."""

from __future__ import annotations

import os

#: The test knobs a user may set for a run of the suite (read by the tests, never by the package).
TEST_KNOBS = ("BISENET_PL_SKIP_SLURM",)
#: The user's own settings of the package (e.g. BISENET_PL_ROOT, where outputs go) would change what the
#: tests compose and run: none reaches a test, in this process or in a CLI subprocess.
for _key in [k for k in os.environ if k.startswith("BISENET_PL_") and k not in TEST_KNOBS]:
    del os.environ[_key]
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ["WANDB_MODE"] = "offline"  # whatever the user's shell says: no test talks to W&B's servers
os.environ.setdefault("WANDB_SILENT", "true")

import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

_TESTS = Path(__file__).resolve().parent


def _git_status() -> str | None:
    """`git status --porcelain` of the checkout (None outside a git checkout, e.g. an sdist)."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all"],
            cwd=_TESTS.parent,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def pytest_sessionstart(session):
    if not hasattr(session.config, "workerinput"):  # the xdist controller (or a plain run) only
        session.config._bisenet_git_status = _git_status()
    else:
        _share_the_cores(int(session.config.workerinput["workercount"]))


def _share_the_cores(workers: int) -> None:
    """Each xdist worker gets its share of the cores as torch threads. Two workers with two OpenMP threads
    each on 2 cores spin-wait on each other: a float64 fit that takes 1 s alone took 115 s beside the
    other worker, and `make test` 26 min instead of 13. (CLI subprocesses get one thread: `cli_env`.)"""
    import torch

    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // workers))


def pytest_sessionfinish(session, exitstatus):
    """A test run leaves the working tree as it found it: a tracked file rewritten, or a file left in the
    checkout that git does not ignore, fails the session and is named."""
    before = getattr(session.config, "_bisenet_git_status", None)
    if before is None:
        return
    after = _git_status()
    if after is not None and after != before:
        changed = sorted(set(after.splitlines()) ^ set(before.splitlines()))
        session.config._bisenet_tree_changes = changed
        session.exitstatus = 1  # pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    changed = getattr(terminalreporter.config, "_bisenet_tree_changes", None)
    if changed:
        terminalreporter.section("the test run changed the working tree", red=True)
        for line in changed:
            terminalreporter.write_line(line)


def pytest_collection_modifyitems(config, items):
    """`make test` runs two pytest-xdist workers with `--dist loadgroup`: a test file is one group (its
    module fixtures are built once), and the parity suite is one group (its mmseg reference runs are
    shared by the whole suite and it writes its figures file once)."""
    for item in items:
        path = Path(str(item.fspath)).resolve()
        parity = path.is_relative_to(_TESTS / "parity")
        item.add_marker(pytest.mark.xdist_group("parity" if parity else str(path.relative_to(_TESTS))))


#: Overrides that shrink any experiment to seconds on a CPU, on the tiny dataset of `tiny_data`.
TINY = [
    "data.batch_size=2",
    "data.num_workers=0",
    "data.crop_size=[64,64]",
    "data.scale=[128,64]",
    "data.test_scale=[128,64]",
    "module.inference.crop_size=[64,64]",
    "module.warmup_steps=2",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "logger=csv",
]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A 64x128 synthetic Cityscapes-layout set: 8 train, 3 val, 2 test images (seconds to make)."""
    from bisenet_pl.data.synthetic import make_synthetic_cityscapes

    root = tmp_path_factory.mktemp("tiny") / "cityscapes"
    return make_synthetic_cityscapes(root, n_train=8, n_val=3, n_test=2, height=64, width=128, seed=0)


#: Variables of the shell running the tests that a CLI under test must not inherit: the package's own
#: settings and the test knobs, a SLURM allocation's (a test run inside a job is not a requeued job),
#: W&B credentials and modes, torch.distributed's rendezvous.
_NOT_INHERITED_PREFIXES = ("BISENET_PL_", "SLURM_", "WANDB_")
_NOT_INHERITED = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_PORT", "MASTER_ADDR")


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess: one torch thread per process keeps 2 cores from thrashing;
    W&B offline; nothing of the user's bisenet_pl/SLURM/W&B/DDP settings (only what `extra` sets)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _NOT_INHERITED and not k.startswith(_NOT_INHERITED_PREFIXES)
    }
    env.update(
        {"OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}
    )
    env.update(extra)
    return env


@pytest.fixture
def run_cli(tmp_path) -> Callable[..., subprocess.CompletedProcess]:
    """Run `python -m <module> <args>` in tmp_path (a user's shell), returning the completed process."""

    def run(module: str, *args: str, timeout: float = 300, env: dict[str, str] | None = None, cwd=None):
        return subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=cwd or tmp_path,
            env=env or cli_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


def int8_export(
    run_cli, trained_run: Path, tiny_data: Path, tmp_path: Path, fmt: str, out: Path, *extra: str
):
    """`python -m bisenet_pl.export format=<fmt>` of the shared trained run, calibrated on 4 tiny images."""
    return run_cli(
        "bisenet_pl.export",
        f"ckpt={trained_run / 'checkpoints' / 'last.ckpt'}",
        f"format={fmt}",
        f"out={out}",
        "exporter=torchscript",
        f"data.root={tiny_data}",
        f"data.synthetic_root={tiny_data}",
        "data.num_workers=0",
        "calibration.images=4",
        *extra,
        f"hydra.run.dir={tmp_path / ('run_' + out.name)}",
    )


def tiny_train_args(data: Path, root_dir: Path, *extra: str) -> list[str]:
    return [
        "experiment=demo",
        f"data.root={data}",
        f"data.synthetic_root={data}",
        f"paths.root_dir={root_dir}",
        "trainer.precision=32-true",
        *TINY,
        *extra,
    ]


def bare_trainer(max_steps: int, callbacks: list, root, precision: str = "64-true"):
    """A CPU Trainer that only trains: no logger, checkpoints, bar, summary or validation (the tests that
    compare training dynamics step by step)."""
    import lightning.pytorch as pl

    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        default_root_dir=str(root),
    )


def wait_for(predicate: Callable[[], bool], timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Poll until `predicate()`; fail early with the process output if it died meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(
                f"process exited with {proc.returncode} before the condition:\n{out[-4000:]}"
            )
        time.sleep(0.2)
    if proc is not None:
        proc.send_signal(signal.SIGKILL)
    raise AssertionError("timed out waiting")


@pytest.fixture(scope="session")
def trained_run(tiny_data, tmp_path_factory) -> Path:
    """One short real training run on `tiny_data` (30 steps), shared by the evaluate/predict tests."""
    root = tmp_path_factory.mktemp("trained")
    run_dir = root / "run"
    args = tiny_train_args(
        tiny_data, root, "trainer.max_steps=30", "trainer.val_check_interval=30", f"hydra.run.dir={run_dir}"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "bisenet_pl.train", *args],
        cwd=root,
        env=cli_env(),  # one thread: beside the other xdist worker, two OpenMP threads spin and thrash
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a test module whose work is many small tensor ops: two OpenMP threads on
    a busy 2-core box oversubscribe the cores (3x slower seen). Restored afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def randomize_bn(model, seed: int = 1, classifier_std: float | None = 0.1) -> None:
    """Give every BN non-trivial statistics and affine terms (so BN mistakes change outputs) and, with
    `classifier_std`, the decode classifier logits of order 1, so fused/fast paths are compared on a model
    that behaves like a trained one, not on near-ties."""
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                n = mod.num_features
                mod.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                mod.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                mod.weight.copy_(torch.rand(n, generator=g) + 0.5)
                mod.bias.copy_(torch.rand(n, generator=g) - 0.5)
        if classifier_std is not None:
            model.decode_head.conv_seg.weight.normal_(0, classifier_std, generator=g)
