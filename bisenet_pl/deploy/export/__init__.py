"""Exporters and the checks every written file must pass: ONNX (`onnx`), OpenVINO IR (`openvino`),
INT8 with its accuracy gate (`quantize`), and graphs baked to take pixels and give labels (`bake`).
A file that fails its check is never left under the name the user asked for (`move_aside`)."""
