"""OpenVINO on x86 CPUs: engine candidates of the x86 tuner (edgekd.backends.ort.tune) beside the ONNX
Runtime ones: the ONNX graph read by OpenVINO (fp32) and NNCF post-training INT8, compiled for the CPU
plugin with the candidate's properties, saved as an IR (.xml + .bin) when chosen. `openvino` and `nncf`
are imported inside the functions that need them (the `openvino` extra)."""
