"""Deploy bundles: what edgekd writes for a device it cannot build or run on itself (the model, a
build script, the device-side runner's inputs), one module per runtime."""
