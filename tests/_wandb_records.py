"""Read back what an offline W&B run wrote (`run-<id>.wandb`), since wandb 0.31 ships no reader.

The file is a 7-byte header (b":W&B", 0xBEE1, version) followed by LevelDB-log framing: 32 KiB blocks of
records `<crc32c:u32><length:u16><type:u8>` (1 full, 2 first, 3 middle, 4 last), a record never split
across a block end except through first/middle/last pieces; each payload is a protobuf `Record`
(docs/libraries.md).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7


def records(path: Path) -> list[Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    magic, _, _ = struct.unpack("<4sHB", data[:HEADER])
    assert magic == b":W&B", f"{path} is not a W&B run file"
    out, pos, pending = [], HEADER, b""
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - (pos % BLOCK)
        if left_in_block < HEADER:  # trailer padding: records never start there
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        pos += HEADER
        chunk = data[pos : pos + length]
        pos += length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(pending)
            out.append(rec)
            pending = b""
    return out


def history(path: Path) -> list[dict[str, Any]]:
    """Every `wandb.log` row as {key: decoded value}."""
    rows = []
    for rec in records(path):
        if rec.WhichOneof("record_type") == "history":
            rows.append(
                {
                    item.key or ".".join(item.nested_key): json.loads(item.value_json)
                    for item in rec.history.item
                }
            )
    return rows


def config(path: Path) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for rec in records(path):
        if rec.WhichOneof("record_type") == "config":
            for item in rec.config.update:
                merged[item.key or ".".join(item.nested_key)] = json.loads(item.value_json)
    return merged
