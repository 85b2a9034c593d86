"""Factories for tests of bad user input (imported by project files under tests/)."""
from __future__ import annotations


def not_splits(**_: object) -> dict:
    return {"train": [1, 2, 3]}


# ---- factories that fail the way users' code fails (tests/cli/test_bad_inputs.py) ----------------

def teacher_raises(**_: object) -> object:
    raise ValueError("boom in the teacher factory")


def data_raises(**_: object) -> object:
    raise RuntimeError("the data is not there")


def student_str(**_: object) -> object:
    return "not a model"


def student_tuple(**kwargs: object) -> object:
    from edgekd.examples import digits

    return (digits.student(),)


def student_classes(num_classes: int = 3, **_: object) -> object:
    """A student with `num_classes` outputs whatever the data has."""
    from edgekd.distill.students import plain_cnn

    return plain_cnn(input_shape=[1, 8, 8], num_classes=num_classes, width=0.25)


def student_features(features: int = 12, **_: object) -> object:
    """A student expecting `features` inputs per sample (the digits have 64)."""
    from torch import nn

    return nn.Sequential(nn.Flatten(), nn.Linear(features, 10))


def student_dict(**_: object) -> object:
    """A module whose forward returns a dict (no .logits attribute): not logits."""
    from torch import nn

    class DictOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

        def forward(self, x):  # noqa: ANN001, ANN202
            return {"logits": self.head(x)}

    return DictOut()


def student_forward_raises(**_: object) -> object:
    from torch import nn

    class Broken(nn.Module):
        def forward(self, x):  # noqa: ANN001, ANN202
            raise KeyError("my forward is broken")

    return Broken()


def _digits(corrupt: str, **kwargs: object) -> object:
    import numpy as np

    from edgekd.examples import digits

    data = digits.load(**kwargs)
    if corrupt == "nan-train":
        data.train.x[3, 0, 0, 0] = np.nan
    elif corrupt == "inf-test":
        data.test.x[0, 0, 1, 1] = np.inf
    elif corrupt == "one-class":
        data.train.y[:] = 1
    return data


def digits_nan_train(**kwargs: object) -> object:
    return _digits("nan-train", **kwargs)


def digits_inf_test(**kwargs: object) -> object:
    return _digits("inf-test", **kwargs)


def digits_one_class(**kwargs: object) -> object:
    return _digits("one-class", **kwargs)
