"""The tensorrt runtime (its backend: edgekd.backends.tensorrt.backend)."""
