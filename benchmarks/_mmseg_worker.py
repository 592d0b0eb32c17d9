"""mmsegmentation's side of `benchmarks/train_vs_mmseg.py`: runs in the parity venv (mmseg 1.2.2 on
mmcv-lite, `make parity-env`), never in ours, and answers one JSON command per stdin line with one JSON
line on stdout, so the caller can interleave mmseg's work with ours on the same core.

Commands:
  {"cmd": "data", "root": R}     build the config's training dataset (train_dataloader.dataset,
                                 CityscapesDataset over R: LoadImageFromFile, LoadAnnotations,
                                 RandomResize, RandomCrop, RandomFlip, PhotoMetricDistortion, PackSegInputs)
  {"cmd": "data_pass"}           one item per frame (what a DataLoader worker does), timed
  {"cmd": "step_setup", "batch": B, "crop": C, "seed": S}
                                 the config's model (SyncBN -> BN) and OptimWrapper (SGD 0.05/0.9/5e-4),
                                 its data preprocessor's pad size set to the crop
  {"cmd": "step"}                one `model.train_step` (preprocess, 5-head loss, backward, SGD), timed
  {"cmd": "quit"}
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "parity" / "reference"))

import _bootstrap as B  # noqa: E402  (the mmcv.ops stand-in, then mmseg; sets 1 torch thread)
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402
from mmengine.structures import PixelData  # noqa: E402
from mmseg.structures import SegDataSample  # noqa: E402

MMLogger.get_instance("mmengine").setLevel(logging.ERROR)
logging.getLogger("mmengine").setLevel(logging.ERROR)


class Worker:
    def __init__(self) -> None:
        self.dataset = None
        self.model = None
        self.wrapper = None
        self.batch: dict | None = None

    def data(self, root: str) -> dict:
        import copy

        from mmseg.registry import DATASETS

        cfg = B.load_config()
        dataset_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
        dataset_cfg.data_root = root
        self.dataset = DATASETS.build(dataset_cfg)
        steps = [s["type"] for s in dataset_cfg.pipeline]
        return {"frames": len(self.dataset), "pipeline": steps}

    def data_pass(self) -> dict:
        assert self.dataset is not None
        start = time.perf_counter()
        for i in range(len(self.dataset)):
            self.dataset[i]
        return {"seconds": time.perf_counter() - start, "items": len(self.dataset)}

    def step_setup(self, batch: int, crop: int, seed: int) -> dict:
        from mmengine.optim import build_optim_wrapper

        cfg = B.load_config()
        cfg.model.data_preprocessor.size = (crop, crop)
        torch.manual_seed(seed)
        self.model = B.build_model(cfg).train()
        self.wrapper = build_optim_wrapper(self.model, cfg.optim_wrapper)
        g = torch.Generator().manual_seed(seed)
        images = torch.randint(0, 256, (batch, 3, crop, crop), generator=g, dtype=torch.uint8)
        labels = torch.randint(0, 19, (batch, crop, crop), generator=g)
        labels[torch.rand(batch, crop, crop, generator=g) < 0.05] = 255
        samples = []
        for label in labels:
            sample = SegDataSample()
            sample.gt_sem_seg = PixelData(data=label[None].long())
            sample.set_metainfo(
                {"img_shape": (crop, crop), "pad_shape": (crop, crop), "ori_shape": (crop, crop)}
            )
            samples.append(sample)
        self.batch = {"inputs": list(images), "data_samples": samples}
        optimizer = self.wrapper.optimizer
        return {
            "optimizer": type(optimizer).__name__,
            "defaults": {k: str(v) for k, v in optimizer.defaults.items()},
        }

    def step(self) -> dict:
        assert self.model is not None and self.batch is not None
        start = time.perf_counter()
        log_vars = self.model.train_step(dict(self.batch), self.wrapper)
        return {"seconds": time.perf_counter() - start, "loss": float(log_vars["loss"])}


def main() -> None:
    cv2.setNumThreads(0)  # as mmengine sets it in every DataLoader worker
    threads = int(os.environ.get("BENCH_THREADS", "1"))
    torch.set_num_threads(threads)
    worker = Worker()
    versions = B.versions()
    print(
        json.dumps({"ready": True, "versions": versions, "threads": threads, "numpy": np.__version__}),
        flush=True,
    )
    for line in sys.stdin:
        request = json.loads(line)
        cmd = request.pop("cmd")
        if cmd == "quit":
            break
        try:
            reply = getattr(worker, cmd)(**request)
        except Exception as err:  # the caller prints it and stops
            reply = {"error": f"{type(err).__name__}: {err}"}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
