"""Static analysis of ONNX models: per-node cost (graph.py), where nodes run on a target
(support_types.py), the device figures a target file gives (device.py), and a roofline latency
estimate for devices that are not attached (estimate.py)."""
