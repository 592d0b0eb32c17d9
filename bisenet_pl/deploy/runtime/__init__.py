"""Runtimes for exported files: ONNX Runtime (plain and baked graphs) and OpenVINO.

Each one is a `Net` (`base.py`): called with a normalised float (N, 3, H, W) batch it returns logits at
the input size, as a `Segmentor` in eval mode does, so the inference modes run any of them unchanged.
"""
