"""A small CNN trained on scikit-learn's digits whose second conv is fragile under INT8: each of its
output channels gets a large weight on an input channel that is always zero (a dead ReLU channel).
The fp32 function does not change (that input is 0), but per-channel INT8 weights take their scale
from the large weight, so that conv's real weights round to zero: quantized, accuracy collapses;
kept in float, INT8 everywhere else holds it (the outlier weights an LLM.int8-style outlier stands for)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

OUTLIER = 60.0  # the dead channel's weight in the second conv (its real weights are ~0.1-0.5)


def digits_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train x, train y, test x, test y) of the built-in digits example's split."""
    from edgekd.examples.digits import load

    s = load()
    return s.train.x, s.train.y, s.test.x, s.test.y


def fragile_cnn(path: Path, seed: int = 0, epochs: int = 12, fragile_linear: bool = False) -> Path:
    """Train conv(1->8) - ReLU - conv(8->16) - ReLU - pool - linear on digits, make conv1's last
    channel dead and give conv2 the outlier weights on it (`fragile_linear`: conv2's last channel
    dead too and the linear layer's weights on its features outliers), export to ONNX at `path`."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    x, y, _, _ = digits_data()
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 16, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        for idx in torch.randperm(len(xs)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xs[idx]), ys[idx]).backward()
            opt.step()
    with torch.no_grad():
        conv1, conv2 = model[0], model[2]
        conv1.weight[-1].zero_()
        conv1.bias[-1] = -1.0  # ReLU(-1) = 0 everywhere: a dead channel
        conv2.weight[:, -1] = OUTLIER
        if fragile_linear:  # conv2's last output channel dead, its 16 pooled features weigh OUTLIER in every logit
            conv2.weight[-1].zero_()
            conv2.bias[-1] = -1.0
            model[6].weight[:, -16:] = OUTLIER
    model.eval()
    torch.onnx.export(model, (xs[:1],), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)
    return path
