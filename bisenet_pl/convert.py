"""`python -m bisenet_pl.convert SRC.pth DST.ckpt [--drop-aux]`: mmseg checkpoint -> ours.

Reads SRC with `read_checkpoint` (weights_only, validated against the model), builds the Segmentor,
loads the weights and writes DST with `save_checkpoint` (atomic, self-describing). Prints what was
mapped. Bad input prints one message and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence

from bisenet_pl.checkpoints import read_checkpoint, save_checkpoint
from bisenet_pl.checkpoints.mmseg import AUX_PREFIX
from bisenet_pl.errors import CheckpointError
from bisenet_pl.models.segmentor import Segmentor

EPILOG = """\
examples:
  python -m bisenet_pl.convert bisenetv2_fcn_4x4_1024x1024_160k_cityscapes.pth bisenetv2.ckpt
  python -m bisenet_pl.convert mmseg.pth deploy.ckpt --drop-aux     # inference-only, 3.36 M params

SRC may be an mmseg checkpoint ({'state_dict', 'meta', 'optimizer'} or a bare state dict, with or
without a DDP 'module.' prefix), a Lightning .ckpt written by bisenet_pl training, or one of ours.
It is read with torch.load(weights_only=True): files that need code to unpickle are refused.
Key names are mmseg's except 'auxiliary_head.' -> 'aux_heads.'. The optimizer state is dropped.
Load the result with bisenet_pl.checkpoints.load_model(DST).
"""


def _part(key: str) -> str:
    """Report group of a key: backbone.detail / .semantic / .bga, decode_head, aux_heads.N."""
    pieces = key.split(".")
    if pieces[0] == "backbone" and len(pieces) > 1:
        return f"backbone.{pieces[1]}"
    if pieces[0] == AUX_PREFIX.rstrip(".") and len(pieces) > 1:
        return f"aux_heads.{pieces[1]}"
    return pieces[0]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bisenet_pl.convert",
        description="Convert an mmsegmentation BiSeNetV2 checkpoint to a self-describing bisenet_pl one.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", metavar="SRC.pth", help="checkpoint to read (mmseg, Lightning or bisenet_pl)")
    parser.add_argument("dst", metavar="DST.ckpt", help="where to write the bisenet_pl checkpoint")
    parser.add_argument(
        "--drop-aux",
        action="store_true",
        help="leave out the 4 auxiliary heads (training-only): a smaller, inference-only checkpoint",
    )
    return parser


def convert(src: str, dst: str, drop_aux: bool = False) -> list[str]:
    """Convert SRC to DST; returns the report lines. Raises CheckpointError on bad input."""
    contents = read_checkpoint(src)
    lines = [f"read {src} as a {contents.source_format} checkpoint ({len(contents.state_dict)} tensors)"]
    for what, n in contents.renamed.items():
        lines.append(f"  renamed: {what} ({n} keys)")
    if not contents.renamed:
        lines.append("  renamed: nothing (keys already in our names)")

    config = dict(contents.model_config)
    state_dict = contents.state_dict
    if drop_aux:
        dropped = [k for k in state_dict if k.startswith(AUX_PREFIX)]
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(AUX_PREFIX)}
        config["aux_heads"] = False
        lines.append(f"  dropped (--drop-aux): {len(dropped)} aux-head tensors")

    counts = Counter(_part(k) for k in state_dict)
    lines.append("  mapped tensors per part:")
    for part, n in counts.items():
        lines.append(f"    {part:<20} {n:>4}")
    for item in contents.skipped:
        lines.append(f"  skipped: {item}")
    if contents.source_format == "mmseg" and "mmseg_meta" in contents.meta:
        lines.append(f"  kept from mmseg meta: {', '.join(sorted(contents.meta['mmseg_meta']))}")

    model = Segmentor(**config)
    model.load_state_dict(state_dict, strict=True)
    meta = dict(contents.meta)
    meta["converted_from"] = str(src)
    meta["source_format"] = contents.source_format
    out = save_checkpoint(model, dst, meta=meta)
    n_params = sum(p.numel() for p in model.parameters())
    lines.append(
        f"wrote {out}: num_classes={config.get('num_classes')}, aux heads: "
        f"{'yes' if config.get('aux_heads') else 'no'}, {n_params:,} parameters"
    )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        for line in convert(args.src, args.dst, drop_aux=args.drop_aux):
            print(line)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
