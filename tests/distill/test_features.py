"""edgekd/distill/features.py: FeatureCapture."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from edgekd.distill.features import FeatureCapture  # noqa: E402
from edgekd.errors import ConfigError  # noqa: E402


def sequential() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 3, stride=2, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x)) + x


class Nested(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 2, 1), Block(), Block())
        self.head = nn.Linear(2, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def test_sequential_layers_by_index() -> None:
    model = sequential()
    x = torch.randn(2, 1, 8, 8)
    with FeatureCapture(model, ["1", "3", "6"]) as cap:
        out = model(x)
    assert set(cap.features) == {"1", "3", "6"}
    torch.testing.assert_close(cap.features["1"], model[1](model[0](x)))
    assert cap.features["3"].shape == (2, 8, 4, 4)
    torch.testing.assert_close(cap.features["6"], out)


def test_nested_paths_and_gradients_flow_through_features() -> None:
    model = Nested()
    x = torch.randn(2, 1, 6, 6)
    with FeatureCapture(model, ["features.1.conv", "features.2"]) as cap:
        model(x)
    block = model.features[2]
    assert cap.features["features.1.conv"].shape == (2, 2, 6, 6)
    cap.features["features.2"].sum().backward()
    assert block.conv.weight.grad is not None and block.conv.weight.grad.abs().sum() > 0


def test_teacher_under_no_grad_gives_graph_free_features() -> None:
    model = Nested()
    with FeatureCapture(model, ["features.0"], source="teacher") as cap, torch.no_grad():
        model(torch.randn(1, 1, 4, 4))
    assert not cap.features["features.0"].requires_grad


def test_features_are_those_of_the_latest_forward() -> None:
    model = sequential()
    a, b = torch.randn(1, 1, 8, 8), torch.randn(3, 1, 8, 8)
    with FeatureCapture(model, ["0"]) as cap:
        model(a)
        model(b)
    torch.testing.assert_close(cap.features["0"], model[0](b))


def test_hooks_are_removed_on_exit_even_after_an_error() -> None:
    model = sequential()
    with pytest.raises(KeyError):
        with FeatureCapture(model, ["0", "2"]) as cap:
            model(torch.randn(1, 1, 8, 8))
            raise KeyError("boom")
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    cap.features.clear()
    model(torch.randn(1, 1, 8, 8))
    assert cap.features == {}


def test_capture_can_be_reopened_but_not_nested() -> None:
    model = sequential()
    capture = FeatureCapture(model, ["0"])
    with capture:
        with pytest.raises(RuntimeError, match="already open"):
            capture.__enter__()
    with capture:
        model(torch.randn(1, 1, 8, 8))
    assert list(capture.features) == ["0"]


def test_no_layers_registers_nothing() -> None:
    model = sequential()
    with FeatureCapture(model, []) as cap:
        assert not model._forward_pre_hooks
        model(torch.randn(1, 1, 8, 8))
    assert cap.features == {}


def test_missing_path_names_it_and_the_closest() -> None:
    with pytest.raises(ConfigError) as info:
        FeatureCapture(Nested(), ["features.1.cnv"], source="student")
    error = info.value
    assert str(error) == "student has no submodule 'features.1.cnv' (closest: features.1.conv, features.2.conv, features.1.act)"
    assert error.hint.startswith("names as in model.named_modules(): features, features.0, features.1, features.1.conv")


def test_missing_path_hint_is_bounded_for_large_models() -> None:
    model = nn.Sequential(*[nn.ReLU() for _ in range(50)])
    with pytest.raises(ConfigError) as info:
        FeatureCapture(model, ["block.3"])
    assert "and 20 more" in info.value.hint
    assert "\n" not in info.value.one_line()


def test_a_tuple_output_leaves_its_first_tensor() -> None:
    model = nn.Sequential(nn.LSTM(3, 4, batch_first=True))  # (output, (h, c)), as Hugging Face layers (hidden, ...)
    x = torch.randn(1, 2, 3)
    with FeatureCapture(model, ["0"], source="student") as cap:
        output, _ = model(x)
    torch.testing.assert_close(cap.features["0"], output)


class Named(nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"x": x}


@pytest.mark.parametrize(("block", "kind"), [(Named(), "dict"), (nn.Identity(), "tuple")])
def test_other_non_tensor_outputs_are_a_config_error(block: nn.Module, kind: str) -> None:
    model = nn.Sequential(block)
    x = torch.randn(1, 2) if kind == "dict" else (None, torch.randn(1, 2))  # a tuple that does not start with a tensor
    name = type(block).__name__
    with FeatureCapture(model, ["0"], source="student") as _, pytest.raises(ConfigError, match=f"'0' \\({name}\\) outputs a {kind}"):
        model(x)
