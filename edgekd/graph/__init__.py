"""ONNX graph operations shared by every model-level command: a model's inputs and their shapes,
feeds that match what the model expects, and shape inference that survives real exports."""
