"""Check 1, the network: mmseg's model from its own config, our model from its state dict.

mmseg builds `bisenetv2_fcn_4xb4-160k_cityscapes-1024x1024` (SyncBN reverted to BN), randomises every
BN's running statistics and affine parameters (so eval mode exercises them), and runs two inputs, one
of a size that is not a multiple of 32. Our Segmentor loads mmseg's state dict through our mmseg
loader (`load_model` on the bare state-dict file) and must give the same backbone outputs, decode and
aux logits, and eval-mode prediction.
"""

from __future__ import annotations

import json

import ours
import torch
from conftest import load

TOL = 1e-4
MMSEG_AUX, OUR_AUX = "auxiliary_head.", "aux_heads."


def _to_mmseg(key: str) -> str:
    return MMSEG_AUX + key[len(OUR_AUX) :] if key.startswith(OUR_AUX) else key


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (tuple(a.shape), tuple(b.shape))
    return float((a.double() - b.double()).abs().max())


def test_network_outputs_keys_and_parameters(reference, record):
    out = reference("network", "--sizes", "2x256x512", "1x200x328")
    info = json.loads((out / "network.json").read_text())
    model = ours.load_model(out / "mmseg_state_dict.pth")
    assert not model.training

    sd = {_to_mmseg(k): v for k, v in model.state_dict().items()}
    missing = sorted(set(info["keys"]) - set(sd))
    extra = sorted(set(sd) - set(info["keys"]))
    shapes_differ = [k for k in info["keys"] if k in sd and list(sd[k].shape) != info["shapes"][k]]
    ok = record(
        "network",
        "state-dict keys missing/extra/shape-mismatched",
        len(missing) + len(extra) + len(shapes_differ),
        "0",
        not (missing or extra or shapes_differ),
    )
    assert ok, (missing[:5], extra[:5], shapes_differ[:5])

    ours_counts = {
        "total": sum(p.numel() for p in model.parameters()),
        "backbone": sum(p.numel() for p in model.backbone.parameters()),
        "decode_head": sum(p.numel() for p in model.decode_head.parameters()),
    }
    for i, head in enumerate(model.aux_heads):
        ours_counts[f"auxiliary_head.{i}"] = sum(p.numel() for p in head.parameters())
    ours_counts["inference"] = ours_counts["backbone"] + ours_counts["decode_head"]
    for part, n in info["params"].items():
        record(
            "network",
            f"parameters {part} (mmseg {n:,})",
            ours_counts.get(part),
            "equal",
            ours_counts.get(part) == n,
        )
    assert ours_counts == info["params"]

    outputs = load(out / "network_outputs.pt")
    failures = []
    for size, ref in outputs.items():
        x = ref["input"]
        with torch.no_grad():
            feats = model.backbone(x)
            decode = model.decode_head(feats[0])
            aux = [head(feats[i + 1]) for i, head in enumerate(model.aux_heads)]
            logits = model(x)
        assert len(feats) == len(ref["backbone"]) == 5
        back = max(_max_diff(a, b) for a, b in zip(feats, ref["backbone"], strict=True))
        dec = _max_diff(decode, ref["decode"])
        aux_d = max(_max_diff(a, b) for a, b in zip(aux, ref["aux"], strict=True))
        seg = _max_diff(logits, ref["seg_logits"])
        agree = float((logits.argmax(1) == ref["pred"]).double().mean())
        rel = dec / float(ref["decode"].abs().max())
        for name, value, tol, good in (
            (f"{size} backbone outputs max |diff|", back, f"<= {TOL:g}", back <= TOL),
            (f"{size} decode logits max |diff|", dec, f"<= {TOL:g}", dec <= TOL),
            (f"{size} decode logits max |diff| / max |logit|", rel, f"<= {TOL:g}", rel <= TOL),
            (f"{size} aux logits max |diff|", aux_d, f"<= {TOL:g}", aux_d <= TOL),
            (f"{size} eval output max |diff|", seg, f"<= {TOL:g}", seg <= TOL),
            (f"{size} eval argmax agreement", agree, "== 1", agree == 1.0),
        ):
            if not record("network", name, value, tol, good):
                failures.append(name)
    assert not failures, failures
