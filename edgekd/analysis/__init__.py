"""Static analysis of ONNX models: per-node cost (graph.py), where each node runs on a target
(support.py, support_types.py, rules_*.py), the device figures a target file gives (device.py), and
a roofline latency estimate for devices that are not attached (estimate.py)."""
