"""Check 2, initialisation: the distribution of every tensor after mmseg's `init_weights()` and ours.

mmseg builds its model and runs `init_weights()` (as its Runner does) under three seeds and reports,
per state-dict tensor, a sample of its values and its full mean/std/min/max. Ours builds `Segmentor()`
under the same seeds. Tensors mmseg leaves constant (BN 1/0, biases 0, running statistics) must be the
same constants; the random ones must come from the same distribution: a two-sample Kolmogorov-Smirnov
test on the pooled samples (p above 1e-4 for every tensor) and means/stds within a few standard
errors. Named expectations on top: the decode head's `conv_seg` is Normal(0, 0.01); the aux heads'
`conv_seg` keep PyTorch's default init (kaiming-uniform, |w| <= 1/sqrt(fan_in)), which mmseg's init
never reaches.
"""

from __future__ import annotations

import math

import ours
import torch
from conftest import load
from scipy.stats import ks_2samp

SEEDS = ("0", "1", "2")
P_MIN = 1e-4


def _to_mmseg(key: str) -> str:
    return "auxiliary_head." + key[len("aux_heads.") :] if key.startswith("aux_heads.") else key


def _ours(seeds, sample):
    per_seed = []
    for seed in seeds:
        torch.manual_seed(seed)
        sd = ours.Segmentor().state_dict()
        per_seed.append({_to_mmseg(k): v.detach().double().flatten() for k, v in sd.items()})
    return [{k: v[:sample] for k, v in s.items()} for s in per_seed], per_seed


def test_init_distributions(reference, record):
    ref = load(reference("init", "--seeds", *SEEDS, "--sample", "4096") / "init.pt")
    samples, full = _ours([int(s) for s in SEEDS], 4096)
    assert set(full[0]) == set(ref[0]), sorted(set(full[0]) ^ set(ref[0]))[:5]

    const_bad, random_bad, worst_p, worst_key, n_random = [], [], 1.0, "", 0
    worst_std = 0.0
    for key in ref[0]:
        r_stats = [s[key] for s in ref]
        constant = all(s["min"] == s["max"] for s in r_stats)
        if constant:
            values = torch.cat([f[key] for f in full])
            if not bool((values == r_stats[0]["min"]).all()):
                const_bad.append(key)
            continue
        n_random += 1
        a = torch.cat([s[key]["sample"].double() for s in ref]).numpy()
        b = torch.cat([s[key] for s in samples]).numpy()
        p = float(ks_2samp(a, b).pvalue)
        if p < worst_p:
            worst_p, worst_key = p, key
        n = sum(s["numel"] for s in r_stats)
        r_std = sum(s["std"] for s in r_stats) / len(r_stats)
        o_std = sum(float(f[key].std()) for f in full) / len(full)
        r_mean = sum(s["mean"] for s in r_stats) / len(r_stats)
        o_mean = sum(float(f[key].mean()) for f in full) / len(full)
        std_err = abs(o_std / r_std - 1) / (6 / math.sqrt(2 * n))
        mean_err = abs(o_mean - r_mean) / (6 * r_std * math.sqrt(2 / n))
        worst_std = max(worst_std, std_err)
        if p < P_MIN or std_err > 1 or mean_err > 1:
            random_bad.append((key, p, o_std, r_std))

    ok = [
        record(
            "init",
            "constant tensors (BN 1/0, zero biases, running stats) differing",
            len(const_bad),
            "0",
            not const_bad,
        ),
        record(
            "init",
            f"random tensors ({n_random}) failing KS/mean/std",
            len(random_bad),
            f"0 (KS p >= {P_MIN:g}, mean/std within 6 s.e.)",
            not random_bad,
        ),
        record("init", "smallest KS p-value over random tensors", worst_p, f">= {P_MIN:g}", worst_p >= P_MIN),
        record("init", "largest std gap, in units of 6 standard errors", worst_std, "<= 1", worst_std <= 1),
    ]
    dec = torch.cat([f["decode_head.conv_seg.weight"] for f in full])
    dec_std = float(dec.std())
    ok.append(
        record(
            "init", "decode conv_seg std (Normal(0, 0.01))", dec_std, "0.01 +- 2%", abs(dec_std - 0.01) < 2e-4
        )
    )
    for i in range(4):
        w_ours = full[0][f"auxiliary_head.{i}.conv_seg.weight"]
        fan_in = int(ref[0][f"auxiliary_head.{i}.conv_seg.weight"]["numel"] // 19)
        bound = 1 / math.sqrt(fan_in)
        r_max = max(
            max(
                abs(s[f"auxiliary_head.{i}.conv_seg.weight"]["min"]),
                abs(s[f"auxiliary_head.{i}.conv_seg.weight"]["max"]),
            )
            for s in ref
        )
        o_max = float(w_ours.abs().max())
        ok.append(
            record(
                "init",
                f"aux{i} conv_seg max|w| * sqrt(fan_in) (PyTorch default <= 1; mmseg)",
                [o_max / bound, r_max / bound],
                "both <= 1, > 0.9",
                0.9 < o_max / bound <= 1 and 0.9 < r_max / bound <= 1,
            )
        )
    assert all(ok), (const_bad[:5], random_bad[:5], worst_key)
