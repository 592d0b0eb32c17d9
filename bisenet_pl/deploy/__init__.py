"""Deployment, apart from training: what an exported file promises (`contract`), the exporters and their
checks (`export/`: ONNX, OpenVINO, INT8 with its accuracy gate, baked graphs), and the runtimes that run
the files (`runtime/`: ONNX Runtime, OpenVINO, baked graphs), all behind one small `Net` interface.

The layering (tested in tests/packaging): `contract` imports nothing of ours but the error types;
`runtime` imports `contract`; `export` imports both; nothing here imports `inference`, Lightning or
Hydra. `bisenet_pl.inference` builds on this package (its `load_net` picks a runtime or a torch path).
"""
