"""The mmsegmentation side of the parity suite: `python mmseg_side.py COMMAND OUT_DIR [options]`.

Runs in the parity venv only (mmseg 1.2.2, mmengine 0.10.7, mmcv-lite 2.1.0, CPU torch), never in the
project's. Each command builds what it needs through mmseg's own API (configs from the wheel, the
MODELS registry, its heads, samplers, metric, TTA model, pipeline, optimiser wrapper and schedulers),
and writes tensors (`torch.save`, plain tensors/containers only) and JSON into OUT_DIR. The tests in
tests/parity load them with `weights_only=True` and compare with bisenet_pl.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bootstrap as B  # noqa: E402  (registers the mmcv.ops stand-in, imports mmseg)
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402
from mmengine.structures import PixelData  # noqa: E402
from mmseg.structures import SegDataSample  # noqa: E402

MMLogger.get_instance("mmengine").setLevel(logging.ERROR)
logging.getLogger("mmengine").setLevel(logging.ERROR)

NUM_CLASSES = 19
HEADS = ("decode", "aux0", "aux1", "aux2", "aux3")


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True))


def randomize_bn(model: torch.nn.Module, seed: int) -> None:
    """Random BN running statistics and affine parameters, so eval mode exercises all of them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_((torch.rand(n, generator=g) - 0.5) * 0.2)
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(0.8 + 0.4 * torch.rand(n, generator=g))
                m.bias.copy_((torch.rand(n, generator=g) - 0.5) * 0.2)
                m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=g)))


def _samples_from_labels(labels: torch.Tensor) -> list[SegDataSample]:
    """One SegDataSample per (H,W) label with gt_sem_seg, as PackSegInputs makes them."""
    out = []
    for lab in labels:
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=lab[None].long())
        s.set_metainfo({"img_shape": tuple(lab.shape), "ori_shape": tuple(lab.shape)})
        out.append(s)
    return out


def _param_counts(model) -> dict[str, int]:
    def n(mod):
        return int(sum(p.numel() for p in mod.parameters()))

    counts = {"total": n(model), "backbone": n(model.backbone), "decode_head": n(model.decode_head)}
    for i, head in enumerate(model.auxiliary_head):
        counts[f"auxiliary_head.{i}"] = n(head)
    counts["inference"] = counts["backbone"] + counts["decode_head"]
    return counts


# ---------------------------------------------------------------------------------------------- network
def cmd_network(out: Path, args) -> None:
    torch.manual_seed(args.seed)
    model = B.build_model()
    randomize_bn(model, args.seed + 1)
    with torch.no_grad():  # logits of order 1 instead of Normal(0, 0.01)'s 0.1, so 1e-4 means something
        model.decode_head.conv_seg.weight.mul_(30.0)
    model.eval()
    sd = model.state_dict()
    torch.save({k: v.clone() for k, v in sd.items()}, out / "mmseg_state_dict.pth")
    g = torch.Generator().manual_seed(args.seed + 2)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    results = {}
    with torch.no_grad():
        for n, h, w in sizes:
            x = torch.randn(n, 3, h, w, generator=g)
            feats = model.extract_feat(x)
            decode = model.decode_head(feats)
            aux = [head(feats) for head in model.auxiliary_head]
            samples = model.predict(x)
            results[f"{n}x{h}x{w}"] = {
                "input": x,
                "backbone": [f.clone() for f in feats],
                "decode": decode,
                "aux": aux,
                "seg_logits": torch.stack([s.seg_logits.data for s in samples]),
                "pred": torch.stack([s.pred_sem_seg.data[0] for s in samples]),
            }
    torch.save(results, out / "network_outputs.pt")
    _write_json(
        out / "network.json",
        {
            "keys": list(sd.keys()),
            "shapes": {k: list(v.shape) for k, v in sd.items()},
            "params": _param_counts(model),
            "versions": B.versions(),
        },
    )


# ------------------------------------------------------------------------------------------------- init
def cmd_init(out: Path, args) -> None:
    """Per-tensor samples and statistics of the initialised model, several seeds."""
    per_seed = []
    for seed in args.seeds:
        torch.manual_seed(seed)
        model = B.build_model()  # init_weights() as the Runner calls it
        stats = {}
        for k, v in model.state_dict().items():
            v = v.detach().double().flatten()
            stats[k] = {
                "sample": v[: args.sample].float().clone(),
                "mean": float(v.mean()),
                "std": float(v.std()) if v.numel() > 1 else 0.0,
                "min": float(v.min()),
                "max": float(v.max()),
                "numel": int(v.numel()),
            }
        per_seed.append(stats)
    torch.save(per_seed, out / "init.pt")


# ----------------------------------------------------------------------------------------------- losses
def _loss_inputs(seed: int, n: int, size: int):
    """Labels with blocks of classes and 255 regions; sharp per-head logits that agree with them mostly."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, NUM_CLASSES, (n, 1, size // 16, size // 16), generator=g).float()
    label = F.interpolate(coarse, size=(size, size), mode="nearest")[:, 0].long()
    holes = (torch.rand(n, 1, size // 32, size // 32, generator=g) < 0.12).float()
    ignore = F.interpolate(holes, size=(size, size), mode="nearest")[:, 0].bool()
    label[ignore] = 255
    strides = (8, 4, 8, 16, 32)
    logits = []
    for stride in strides:
        s = size // stride
        lab = F.interpolate(label[:, None].float(), size=(s, s), mode="nearest")[:, 0].long()
        onehot = F.one_hot(lab.clamp(max=NUM_CLASSES - 1), NUM_CLASSES).permute(0, 3, 1, 2).float()
        logits.append(6.0 * onehot + 2.5 * torch.randn(n, NUM_CLASSES, s, s, generator=g))
    return logits, label


def cmd_losses(out: Path, args) -> None:
    cfg = B.load_config()
    plain = B.build_model(cfg)
    ohem_cfg = B.load_config()
    sampler = dict(type="OHEMPixelSampler", thresh=0.7, min_kept=10000)
    ohem_cfg.model.decode_head.sampler = sampler
    for head in ohem_cfg.model.auxiliary_head:
        head.sampler = sampler
    ohem = B.build_model(ohem_cfg)
    logits, label = _loss_inputs(args.seed, args.batch, args.size)
    samples = _samples_from_labels(label)
    result = {"logits": logits, "label": label, "cases": {}}
    for case, model, min_kept in (("ce", plain, None), ("ohem", ohem, 10000), ("ohem_all_kept", ohem, 10**6)):
        heads = [model.decode_head, *model.auxiliary_head]
        losses, kept = {}, {}
        with torch.no_grad():
            for name, head, lg in zip(HEADS, heads, logits, strict=True):
                if head.sampler is not None:
                    head.sampler.min_kept = min_kept
                    up = F.interpolate(lg, size=label.shape[-2:], mode="bilinear", align_corners=False)
                    kept[name] = int((head.sampler.sample(up, label[:, None]) > 0).sum())
                losses[name] = head.loss_by_feat(lg, samples)["loss_ce"]
            names = {"decode": "decode", **{f"aux{i}": f"aux_{i}" for i in range(4)}}
            prefixed = {f"{names[k]}.loss_ce": v for k, v in losses.items()}
            total, _ = model.parse_losses(prefixed)
        result["cases"][case] = {
            "losses": {k: float(v) for k, v in losses.items()},
            "total": float(total),
            "kept": kept,
            "valid": int((label != 255).sum()),
        }
    torch.save(result, out / "losses.pt")


# ----------------------------------------------------------------------------------------------- metric
def cmd_metric(out: Path, args) -> None:
    from mmseg.evaluation import IoUMetric

    data = torch.load(args.input, weights_only=True)
    metric = IoUMetric(iou_metrics=["mIoU"])
    metric.dataset_meta = {"classes": tuple(f"c{i}" for i in range(NUM_CLASSES))}
    for pred, gt in zip(data["preds"], data["gts"], strict=True):
        metric.process({}, [{"pred_sem_seg": {"data": pred[None]}, "gt_sem_seg": {"data": gt[None]}}])
    areas = [sum(r[i] for r in metric.results) for i in range(4)]
    per_class = IoUMetric.total_area_to_metrics(*areas, metrics=["mIoU"])
    summary = metric.evaluate(len(data["preds"]))
    torch.save(
        {
            "IoU": torch.as_tensor(np.asarray(per_class["IoU"], dtype=np.float64)),
            "Acc": torch.as_tensor(np.asarray(per_class["Acc"], dtype=np.float64)),
            "aAcc": float(per_class["aAcc"]),
            "summary": {k: float(v) for k, v in summary.items()},
            "areas": [torch.as_tensor(np.asarray(a)) for a in areas],
        },
        out / "metric.pt",
    )


# ------------------------------------------------------------------------------------------- checkpoint
def cmd_checkpoint(out: Path, args) -> None:
    """A checkpoint written by mmengine's save_checkpoint in the released weights' layout."""
    import time

    import mmengine
    from mmengine.optim import build_optim_wrapper
    from mmengine.runner.checkpoint import get_state_dict, save_checkpoint, weights_to_cpu
    from mmseg.datasets import CityscapesDataset

    cfg = B.load_config()
    torch.manual_seed(args.seed)
    model = B.build_model(cfg)
    # a few SGD steps (train mode, real loss) so the optimizer state and BN statistics are not trivial
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    g = torch.Generator().manual_seed(args.seed + 1)
    model.train()
    for _ in range(2):
        x = torch.randn(2, 3, 64, 64, generator=g)
        lab = torch.randint(0, NUM_CLASSES, (2, 64, 64), generator=g)
        losses = model.loss(x, _samples_from_labels(lab))
        total, _ = model.parse_losses(losses)
        wrapper.update_params(total)
    model.eval()
    meta = {
        "mmseg_version": B.mmseg.__version__,
        "mmengine_version": mmengine.__version__,
        "config": cfg.pretty_text,
        "CLASSES": tuple(CityscapesDataset.METAINFO["classes"]),
        "PALETTE": [list(c) for c in CityscapesDataset.METAINFO["palette"]],
        "epoch": 0,
        "iter": 2,
        "time": time.asctime(),
        "seed": args.seed,
    }
    checkpoint = {
        "meta": meta,
        "state_dict": weights_to_cpu(get_state_dict(model)),
        "optimizer": wrapper.state_dict(),
    }
    save_checkpoint(checkpoint, str(out / "mmseg_checkpoint.pth"))
    ddp_style = dict(checkpoint, state_dict={f"module.{k}": v for k, v in checkpoint["state_dict"].items()})
    save_checkpoint(ddp_style, str(out / "mmseg_checkpoint_ddp.pth"))
    g = torch.Generator().manual_seed(args.seed + 2)
    x = torch.randn(1, 3, 160, 288, generator=g)
    with torch.no_grad():
        samples = model.predict(x)
    torch.save(
        {"input": x, "seg_logits": samples[0].seg_logits.data, "pred": samples[0].pred_sem_seg.data[0]},
        out / "checkpoint_outputs.pt",
    )


# -------------------------------------------------------------------------------------------------- tta
def _random_eval_model(seed: int, cfg=None):
    torch.manual_seed(seed)
    model = B.build_model(cfg)
    randomize_bn(model, seed + 1)
    with torch.no_grad():
        model.decode_head.conv_seg.weight.mul_(30.0)
    return model.eval()


def cmd_tta(out: Path, args) -> None:
    """The Cityscapes config's ms+flip (tta_pipeline + SegTTAModel) and mmseg's slide inference."""
    from mmcv.transforms import Compose
    from mmengine.dataset import pseudo_collate

    extra = args.extra
    cfg = B.load_config()
    model = _random_eval_model(args.seed, cfg)
    torch.save(model.state_dict(), out / "mmseg_state_dict.pth")
    sample = {
        "img_path": extra["image"],
        "seg_map_path": extra["label"],
        "reduce_zero_label": False,
        "seg_fields": [],
    }

    tta_pipeline = Compose(cfg.tta_pipeline)
    tta_model = B.MODELS.build(B.ConfigDict(type="SegTTAModel", module=model))
    captured = []
    merge = tta_model.merge_preds

    def capture(data_samples_list):
        captured.extend(data_samples_list)
        return merge(data_samples_list)

    tta_model.merge_preds = capture
    with torch.no_grad():
        merged = tta_model.test_step(pseudo_collate([tta_pipeline(dict(sample))]))
    (augs,) = captured  # one image: its list of augmented predictions
    probs = torch.stack([a.seg_logits.data.softmax(0) for a in augs]).mean(0)
    passes = [
        {"scale": [float(v) for v in a.scale_factor], "flip": bool(a.flip), "img_shape": list(a.img_shape)}
        for a in augs
    ]

    slide_cfg = B.load_config()
    slide_cfg.model.test_cfg = dict(
        mode="slide", crop_size=tuple(extra["crop"]), stride=tuple(extra["stride"])
    )
    slide_model = B.build_model(slide_cfg, init=False)
    slide_model.load_state_dict(model.state_dict())
    slide_model.eval()
    h, w = extra["size"]
    test_pipeline = Compose(
        [
            dict(type="LoadImageFromFile"),
            dict(type="Resize", scale=(w, h), keep_ratio=True),  # the config's test resize, a no-op here
            dict(type="LoadAnnotations"),
            dict(type="PackSegInputs"),
        ]
    )
    with torch.no_grad():
        (slide,) = slide_model.test_step(pseudo_collate([test_pipeline(dict(sample))]))
    torch.save(
        {
            "msflip_probs": probs,
            "msflip_pred": merged[0].pred_sem_seg.data[0],
            "slide_logits": slide.seg_logits.data,
            "slide_pred": slide.pred_sem_seg.data[0],
        },
        out / "tta.pt",
    )
    _write_json(out / "tta.json", {"passes": passes, "ratios": list(cfg.img_ratios)})


# --------------------------------------------------------------------------------------------- training
def mmcv_warmup_poly(
    t: int, base: float, max_iters: int, warmup: int, ratio: float, power: float, eta_min: float
):
    """mmcv 1.x (which trained the released weights): poly(t) = (base - min)(1 - t/max)^power + min, and
    for t < warmup a linear warm-up that multiplies it by 1 - (1 - t/warmup)(1 - ratio)."""
    regular = (base - eta_min) * (1 - t / max_iters) ** power + eta_min
    if t < warmup:
        return regular * (1 - (1 - t / warmup) * (1 - ratio))
    return regular


def cmd_train(out: Path, args) -> None:
    """K iterations of mmseg's training path: model.train_step (data preprocessor, loss, parse_losses,
    OptimWrapper with the config's SGD), LR from its param schedulers (mmengine) or mmcv's formula."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import PARAM_SCHEDULERS

    extra = args.extra
    steps, warmup, max_iters, n, size = (extra[k] for k in ("steps", "warmup", "max_iters", "batch", "size"))
    cfg = B.load_config()
    cfg.model.decode_head.dropout_ratio = 0.0
    for head in cfg.model.auxiliary_head:
        head.dropout_ratio = 0.0
    cfg.model.data_preprocessor.size = (size, size)
    torch.manual_seed(args.seed)
    initial = B.build_model(cfg).state_dict()
    torch.save({k: v.clone() for k, v in initial.items()}, out / "initial.pth")

    g = torch.Generator().manual_seed(args.seed + 1)
    batches = []
    for _ in range(steps):
        imgs = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
        coarse = torch.randint(0, NUM_CLASSES, (n, 1, size // 8, size // 8), generator=g).float()
        labels = F.interpolate(coarse, size=(size, size), mode="nearest")[:, 0].to(torch.uint8)
        labels[:, : size // 8] = 255
        batches.append({"image_bgr": imgs, "label": labels})
    torch.save(batches, out / "batches.pt")

    # mmseg's own sensitivity: the same runs from weights perturbed by 1e-7 (relative), the size of a
    # float32 rounding difference. Tiny-batch BN makes these dynamics chaotic (see the test).
    g_twin = torch.Generator().manual_seed(args.seed + 7)
    perturbed = {
        k: (
            v * (1 + 1e-7 * torch.randn(v.shape, generator=g_twin))
            if v.is_floating_point() and "running" not in k
            else v
        )
        for k, v in initial.items()
    }
    results = {}
    for style, start in (
        ("mmengine", initial),
        ("mmcv", initial),
        ("mmengine_twin", perturbed),
        ("mmcv_twin", perturbed),
        # forward passes only, never an optimiser step: where a network that does not learn ends up
        ("frozen", initial),
    ):
        model = B.build_model(cfg, init=False)
        model.load_state_dict(start)
        model.double().train()
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
        base = cfg.optim_wrapper.optimizer.lr
        schedulers = []
        if style.startswith(
            "mmengine"
        ):  # the config's two schedulers, with their iteration counts scaled down
            linear, poly = (dict(c) for c in cfg.param_scheduler)
            linear.update(begin=0, end=warmup)
            poly.update(begin=warmup, end=max_iters)
            schedulers = [PARAM_SCHEDULERS.build(dict(c, optimizer=wrapper)) for c in (linear, poly)]
        log = {"lr": [], "loss": [], **{f"loss_{h}": [] for h in HEADS}}
        normalised = []
        for t, batch in enumerate(batches):
            if style.startswith("mmcv"):
                lr = mmcv_warmup_poly(t, base, max_iters, warmup, 0.1, 0.9, 1e-4)
                for group in wrapper.optimizer.param_groups:
                    group["lr"] = lr
            log["lr"].append(float(wrapper.optimizer.param_groups[0]["lr"]))
            data = {
                "inputs": list(batch["image_bgr"]),
                "data_samples": _samples_from_labels(batch["label"].long()),
            }
            if style == "mmengine":
                normalised.append(model.data_preprocessor(dict(data), True)["inputs"].float())
            # model.train_step's own sequence (preprocess, loss, parse_losses, update_params), in float64:
            # see the test for why float32 cannot be compared step by step on tiny batches
            with wrapper.optim_context(model):
                data = model.data_preprocessor(data, True)
                losses = model(data["inputs"].double(), data["data_samples"], mode="loss")
            parsed, log_vars = model.parse_losses(losses)
            if style != "frozen":
                wrapper.update_params(parsed)
            log["loss"].append(float(log_vars["loss"]))
            for h, key in zip(HEADS, ("decode", "aux_0", "aux_1", "aux_2", "aux_3"), strict=True):
                log[f"loss_{h}"].append(float(log_vars[f"{key}.loss_ce"]))
            for sch in schedulers:
                sch.step()
        torch.save(
            {k: v.clone() for k, v in model.state_dict().items()}, out / f"final_{style}.pth"
        )  # float64
        results[style] = log
        if style == "mmengine":
            torch.save(normalised, out / "normalised_batches.pt")
    results["schedule"] = _full_schedule(cfg, warmup, max_iters)
    _write_json(out / "train.json", results)


def _full_schedule(cfg, warmup: int, max_iters: int) -> dict:
    """The LR over the whole schedule: mmengine's schedulers stepped every iteration, and mmcv's formula."""
    from mmengine.optim import OptimWrapper
    from mmengine.registry import PARAM_SCHEDULERS

    base = cfg.optim_wrapper.optimizer.lr
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    wrapper = OptimWrapper(opt)
    linear, poly = (dict(c) for c in cfg.param_scheduler)
    linear.update(begin=0, end=warmup)
    poly.update(begin=warmup, end=max_iters)
    schedulers = [PARAM_SCHEDULERS.build(dict(c, optimizer=wrapper)) for c in (linear, poly)]
    points = sorted(
        set(range(0, min(max_iters, warmup + 100))) | set(range(0, max_iters, 97)) | {max_iters - 1}
    )
    wanted, mmengine_lr = set(points), []
    for t in range(max_iters):
        if t in wanted:
            mmengine_lr.append(opt.param_groups[0]["lr"])
        for sch in schedulers:
            sch.step()
    mmcv_lr = [mmcv_warmup_poly(t, base, max_iters, warmup, 0.1, 0.9, 1e-4) for t in points]
    return {"t": points, "mmengine": mmengine_lr, "mmcv": mmcv_lr}


# ----------------------------------------------------------------------------------------- augmentation
def cmd_augment(out: Path, args) -> None:
    """The config's own training data: its CityscapesDataset (train_dataloader.dataset, data_root
    pointed at the frames) lists the frames, and its pipeline (LoadImageFromFile, LoadAnnotations,
    RandomResize, RandomCrop, RandomFlip, PhotoMetricDistortion, PackSegInputs) and the model's
    SegDataPreProcessor (normalise, pad to the crop size) make `samples` training samples in a row per
    frame, from one seeded global numpy generator per frame (mmcv/mmseg transforms draw from np.random).
    The frame is decoded once (the two loading steps), the random steps run per sample. Each sample is
    summarised by augment_stats.sample_stats, as on our side."""
    import copy

    import augment_stats
    from mmcv.transforms import Compose
    from mmseg.registry import DATASETS

    extra = args.extra
    cfg = B.load_config()
    dataset_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    dataset_cfg.data_root = extra["root"]
    dataset = DATASETS.build(dataset_cfg)
    steps = [dict(s) for s in dataset_cfg.pipeline]
    kinds = [s["type"] for s in steps]
    assert kinds[:2] == ["LoadImageFromFile", "LoadAnnotations"] and kinds[-1] == "PackSegInputs", kinds
    load, augment = Compose(steps[:2]), Compose(steps[2:])
    preprocessor = B.MODELS.build(cfg.model.data_preprocessor)
    samples, flips, frames = [], [], []
    for index in range(len(dataset)):
        info = dataset.get_data_info(index)
        frames.append(str(Path(info["img_path"]).relative_to(extra["root"])))
        np.random.seed([args.seed, 1, index])
        loaded = load(info)
        for _ in range(extra["samples"]):
            packed = augment(copy.deepcopy(loaded))
            with torch.no_grad():
                data = preprocessor(
                    {"inputs": [packed["inputs"]], "data_samples": [packed["data_samples"]]}, True
                )
            sample = data["data_samples"][0]
            samples.append(
                augment_stats.sample_stats(
                    data["inputs"][0],
                    sample.gt_sem_seg.data[0],
                    tuple(sample.img_shape),
                    float(sample.scale_factor[0]),
                )
            )
            flips.append(bool(sample.flip))
    torch.save(augment_stats.collate(samples, flips), out / "augment.pt")

    def plain(d):
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(d).items()}

    _write_json(
        out / "augment.json",
        {
            "frames": frames,
            "pipeline": [plain(s) for s in steps],
            "data_preprocessor": plain(cfg.model.data_preprocessor),
        },
    )


COMMANDS = {
    "network": cmd_network,
    "init": cmd_init,
    "losses": cmd_losses,
    "metric": cmd_metric,
    "checkpoint": cmd_checkpoint,
    "tta": cmd_tta,
    "train": cmd_train,
    "augment": cmd_augment,
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=sorted(COMMANDS))
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    p.add_argument("--sizes", nargs="*", default=["2x256x512", "1x200x328"])
    p.add_argument("--sample", type=int, default=4096)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--input", type=Path, default=None)
    p.add_argument("--extra", default="{}", help="JSON with command-specific settings")
    args = p.parse_args(argv)
    args.extra = json.loads(args.extra)
    args.out.mkdir(parents=True, exist_ok=True)
    COMMANDS[args.command](args.out, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
