"""The qnn-htp runtime (its backend: edgekd.backends.qnn.backend)."""
