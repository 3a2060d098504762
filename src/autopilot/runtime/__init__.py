"""What running a shipped model needs, without torch: the ONNX Runtime
session (`model.ServedModel`) and the SQL request log (`requestlog`).

It sits below `monitor` and `serve`, which both use it; it imports neither.
"""
