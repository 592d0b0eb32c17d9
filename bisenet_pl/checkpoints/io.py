"""Bytes on disk: atomic writes that a kill cannot truncate, and loads that never run code from a file.

Every read is `torch.load(..., map_location="cpu", weights_only=True)`; every failure becomes one
`CheckpointError` whose message names the file.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import pickletools
import re
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import torch

from bisenet_pl.errors import CheckpointError


def plain(value: Any, where: str) -> Any:
    """Copy `value` as plain containers (tuples -> lists) or raise: files must load weights_only."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, list | tuple):
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str | int):
                raise TypeError(f"{where}: key {k!r} is not a str or int")
            out[k] = plain(v, f"{where}[{k!r}]")
        return out
    raise TypeError(
        f"{where} is a {type(value).__name__}; checkpoints hold only plain containers "
        "(dict/list/str/int/float/bool/None) and tensors, so they load with weights_only=True"
    )


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _atomic_file(path: Path, mode: str) -> Iterator[IO[Any]]:
    """A file object whose bytes appear at `path` only once complete: temp file in the same folder (so the
    rename is atomic), flushed, fsync'ed, then `os.replace`d; on any error the temp file is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp_name: str | None = tmp
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes 0600 files; ours get the usual permissions (0666 minus the umask), so
        # collaborators on a shared cluster filesystem can read them as they could any other file.
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
        tmp_name = None
    finally:
        if tmp_name is not None and os.path.exists(tmp_name):
            os.unlink(tmp_name)


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """`torch.save` that never leaves a partial file at `path`: a kill at any moment leaves the old file
    or the new one, never a truncated one (a stale `.<name>.*.tmp` at worst, removed by the next run).

    Lightning's own writer stages through the system temp folder, which on a cluster is another
    filesystem than the run folder, where the final move is a non-atomic copy.
    """
    path = Path(path)
    with _atomic_file(path, "wb") as f:
        torch.save(obj, f)
    return path


def atomic_write_text(text: str, path: str | os.PathLike[str]) -> Path:
    """Write a small text file (a run's config, its results) atomically, as `atomic_torch_save`."""
    path = Path(path)
    with _atomic_file(path, "w") as f:
        f.write(text)
    return path


def _describe_magic(head: bytes) -> str | None:
    """A human name for a few common non-checkpoint file types, from their first bytes."""
    magics = {
        b"\x89PNG": "a PNG image",
        b"\xff\xd8\xff": "a JPEG image",
        b"\x1f\x8b": "a gzip archive",
        b"%PDF": "a PDF document",
        b"GIF8": "a GIF image",
    }
    for magic, name in magics.items():
        if head.startswith(magic):
            return name
    return None


def safe_load(path: Path, mmap: bool = False) -> Any:
    """`torch.load(weights_only=True)` with every failure turned into one readable CheckpointError.

    `mmap=True` maps a zip checkpoint's tensors instead of reading them: cheap when only a few fields
    (a stored step) are needed.
    """
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory, not a checkpoint file")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    if not head:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): not a PyTorch checkpoint")
    kind = _describe_magic(head)
    if kind is not None:
        raise CheckpointError(f"{path} is {kind}, not a PyTorch checkpoint")
    try:
        with warnings.catch_warnings():  # torch's advice about pickle protocols is noise for a refused file
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(
                path, map_location="cpu", weights_only=True, mmap=mmap and head.startswith(b"PK")
            )
    except pickle.UnpicklingError as e:
        what = _code_it_would_run(path, str(e))
        if what is not None:
            raise CheckpointError(
                f"{path} is not a plain checkpoint: unpickling it would have to call {what} "
                "(i.e. run code from the file), and it will not be unpickled, for safety. "
                "Only tensors and plain containers are accepted (torch.load(weights_only=True)). If you "
                "trust the file, re-save just its weights, e.g. "
                "torch.save({'state_dict': ckpt['state_dict']}, 'weights.pth')."
            ) from None
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint (or it is corrupt): it could not be read as one"
        ) from None
    except Exception as e:  # torch/zipfile/pickle raise many types for a bad file; none may escape
        if isinstance(e, OSError) and e.strerror:
            raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror}") from None
        if head.startswith(b"PK"):
            raise CheckpointError(
                f"{path} is not a readable PyTorch checkpoint: it is truncated or corrupt"
            ) from None
        # the same words as the unpickler's refusal above: which error random bytes trip is chance
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint (or it is corrupt): it could not be read as one"
        ) from None


def _code_it_would_run(path: Path, message: str) -> str | None:
    """The callable a refused pickle names (`posix.system`, `builtins.eval`...), or None if it names none.

    torch words the refusal "Unsupported global: GLOBAL x.y" or "unsupported GLOBAL x.y whose module x is
    blocked"; a bare pickle (not a torch zip file) is refused earlier, at an opcode, so its globals are
    found by reading the opcodes without executing any.
    """
    match = re.search(r"unsupported global:? (?:GLOBAL )?([\w.]+)", message, flags=re.IGNORECASE)
    if match:
        return match.group(1)
    try:
        with open(path, "rb") as f:
            if f.read(1) != b"\x80":  # a pickle of protocol 2+ starts with PROTO; anything else is not one
                return None
            f.seek(0)
            strings: list[str] = []
            called: str | None = None
            for opcode, arg, _ in pickletools.genops(f):
                if called is None and opcode.name == "GLOBAL" and isinstance(arg, str):
                    called = arg.replace(" ", ".")
                elif called is None and opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    called = f"{strings[-2]}.{strings[-1]}"
                elif isinstance(arg, str):
                    strings.append(arg)
            # genops stops at STOP: only a whole, well-formed pickle counts (random bytes rarely are one)
            return called
    except Exception:  # not a pickle either: the caller says "not a checkpoint"
        return None
    return None
