"""Check 8, checkpoints: a file written by mmengine's own `save_checkpoint` loads through ours.

mmseg trains its model two SGD steps (so the optimizer holds momentum and BN has statistics) and saves
`{'meta', 'state_dict', 'optimizer'}` with mmengine's checkpoint writer, the layout of the released
BiSeNetV2 weights, once plainly and once with DDP's `module.` prefix. `bisenet_pl.convert` and
`load_model` must read them with `weights_only=True` and give mmseg's eval outputs.
"""

from __future__ import annotations

import ours
import torch
from conftest import load

TOL = 1e-4


def _compare(model, ref) -> tuple[float, float]:
    with torch.no_grad():
        logits = model(ref["input"])[0]
    return float((logits - ref["seg_logits"]).abs().max()), float(
        (logits.argmax(0) == ref["pred"]).double().mean()
    )


def test_mmengine_checkpoint_loads(reference, record, tmp_path):
    out = reference("checkpoint")
    ref = load(out / "checkpoint_outputs.pt")
    raw = torch.load(out / "mmseg_checkpoint.pth", weights_only=True)  # what the file holds
    assert {"meta", "state_dict", "optimizer"} <= set(raw)
    failures = []
    for name in ("mmseg_checkpoint.pth", "mmseg_checkpoint_ddp.pth"):
        direct = ours.load_model(out / name)
        ours.convert(str(out / name), str(tmp_path / f"{name}.ckpt"))
        converted = ours.load_model(tmp_path / f"{name}.ckpt")
        for how, model in (("load_model", direct), ("convert + load_model", converted)):
            diff, agree = _compare(model, ref)
            if not record(
                "checkpoints", f"{name} via {how}: eval logits max |diff|", diff, f"<= {TOL:g}", diff <= TOL
            ):
                failures.append((name, how))
            if not record("checkpoints", f"{name} via {how}: argmax agreement", agree, "== 1", agree == 1.0):
                failures.append((name, how, "argmax"))
        sd = converted.state_dict()
        bn = "backbone.detail.detail_branch.0.0.bn.running_mean"
        same = bool(torch.equal(sd[bn], raw["state_dict"][bn]))
        if not record("checkpoints", f"{name}: BN running stats carried over", same, "True", same):
            failures.append((name, "bn"))
    assert not failures, failures
