"""The onnxruntime-cpu runtime (its backend: edgekd.backends.ort.backend)."""
