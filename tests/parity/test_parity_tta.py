"""Check 5, test-time augmentation: our ms+flip and slide modes against mmseg's on the same image.

mmseg runs the Cityscapes config's own `tta_pipeline` (6 ratios x flip, `TestTimeAug`) through
`SegTTAModel`, and its slide inference (`test_cfg` mode 'slide'), with one model (randomised BN) on an
image file we write. We load the same weights, read the same file through our test transform and call
`segment` with `InferenceConfig.from_mode('msflip')` and with a slide config. The argmax must agree
on >= 99.9 % of the pixels (reported); the averaged probabilities' (resp. slide logits') largest
difference is reported and bounded.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import ours
import torch
from conftest import load

H, W = 256, 512  # each ratio's box (int(512 r), int(256 r)) is exactly the image scaled by r (see below)
CROP, STRIDE = (128, 160), (96, 112)
AGREE = 0.999
PROB_TOL = 1e-4


def _image(path_img, path_lab, seed=0):
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(H // 10, W // 10, 3), dtype=np.uint8)
    img = cv2.resize(coarse, (W, H), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img.astype(np.int16) + rng.integers(-20, 21, size=img.shape), 0, 255).astype(np.uint8)
    cv2.imwrite(str(path_img), img)  # BGR on disk as any PNG; both sides decode it with cv2
    label = rng.integers(0, 19, size=(H, W), dtype=np.uint8)
    cv2.imwrite(str(path_lab), label)


def test_msflip_and_slide(reference, record, tmp_path):
    img_path, lab_path = tmp_path / "frame.png", tmp_path / "frame_label.png"
    _image(img_path, lab_path)
    extra = {
        "image": str(img_path),
        "label": str(lab_path),
        "size": [H, W],
        "crop": list(CROP),
        "stride": list(STRIDE),
    }
    out = reference("tta", "--extra", json.dumps(extra, sort_keys=True))
    ref = load(out / "tta.pt")
    info = json.loads((out / "tta.json").read_text())

    model = ours.load_model(out / "mmseg_state_dict.pth")
    bgr = cv2.imread(str(img_path), cv2.IMREAD_COLOR)
    image = ours.build_test_transform(scale=(W, H))(image=bgr)["image"]
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()

    # Our ms+flip resizes the original into the test box scaled by r (mmseg v0.x's MultiScaleFlipAug);
    # the 1.x tta_pipeline scales the loaded image by r. On a frame of the box's own size the two are the
    # same resize (Cityscapes: 2048x1024 in the (2048, 1024) box), so the box here is the image's size.
    msflip = ours.InferenceConfig.from_mode("msflip", box=(W, H))
    probs = ours.segment(model, x, (H, W), msflip)[0]
    slide = ours.segment(model, x, (H, W), ours.InferenceConfig(mode="slide", crop_size=CROP, stride=STRIDE))[
        0
    ]

    ms_agree = float((probs.argmax(0) == ref["msflip_pred"]).double().mean())
    ms_diff = float((probs - ref["msflip_probs"]).abs().max())
    sl_agree = float((slide.argmax(0) == ref["slide_pred"]).double().mean())
    sl_diff = float((slide - ref["slide_logits"]).abs().max())
    ratios_ours = sorted(set(msflip.scales))
    # what mmseg's passes really applied: (x factor, y factor, flip) of each augmented prediction, against
    # our ratios x flips (the box is the image's size, so each factor is the ratio itself)
    applied_ref = sorted(
        (round(p["scale"][0], 6), round(p["scale"][1], 6), p["flip"]) for p in info["passes"]
    )
    flips = (False, True) if msflip.flip else (False,)
    applied_ours = sorted((round(r, 6), round(r, 6), f) for r in msflip.scales for f in flips)
    n_ours = len(msflip.scales) * (2 if msflip.flip else 1)
    ok = [
        record(
            "tta",
            "ms+flip passes (mmseg: 12)",
            n_ours,
            f"== {len(info['passes'])}",
            n_ours == len(info["passes"]),
        ),
        record(
            "tta",
            "ms+flip ratios equal the config's img_ratios",
            ratios_ours == sorted(info["ratios"]),
            "True",
            ratios_ours == sorted(info["ratios"]),
        ),
        record(
            "tta",
            "ms+flip passes' (ratio, ratio, flip) equal those mmseg applied",
            applied_ours == applied_ref,
            "True",
            applied_ours == applied_ref,
        ),
        record("tta", "ms+flip argmax agreement", ms_agree, f">= {AGREE}", ms_agree >= AGREE),
        record(
            "tta",
            "ms+flip averaged probabilities max |diff|",
            ms_diff,
            f"<= {PROB_TOL:g}",
            ms_diff <= PROB_TOL,
        ),
        record("tta", "slide argmax agreement", sl_agree, f">= {AGREE}", sl_agree >= AGREE),
        record("tta", "slide logits max |diff|", sl_diff, "<= 1e-4", sl_diff <= 1e-4),
    ]
    assert len(applied_ref) == 12, info
    assert all(ok)
