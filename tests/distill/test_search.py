"""edgekd/distill/search.py: the pick rule with an injected cost function, one real x86-measured
search and one search estimated with the shipped Jetson AGX Orin device model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from edgekd.config.loading import builtin_dir, load_model  # noqa: E402
from edgekd.config.target import Target  # noqa: E402
from edgekd.distill.search import (  # noqa: E402
    DEFAULT_CANDIDATES,
    Candidate,
    Cost,
    NoStudentFits,
    search_student,
)
from edgekd.errors import EXIT_BUDGET, BudgetViolated, ConfigError  # noqa: E402

SHAPE = (1, 8, 8)


def target(name: str) -> Target:
    return load_model(builtin_dir("targets") / f"{name}.toml", Target, "target")[0]


class FakeCost:
    """Latency 1 ms per 100k MACs, size 1 MB per 10k params; records what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, float]] = []

    def __call__(self, c: Candidate) -> Cost:
        self.calls.append((c.width, c.depth))
        return Cost(c.macs / 1e5, "estimated", "fake: 1 ms per 100k MACs", c.params / 1e4, "estimated", "fake")


def fake_search(tmp_path: Path, **kwargs):  # type: ignore[no-untyped-def]
    fake = FakeCost()
    return search_student("plain_cnn", SHAPE, 10, workdir=tmp_path, cost_fn=fake, **kwargs), fake


def test_picks_the_largest_member_within_the_latency_budget(tmp_path: Path) -> None:
    result, fake = fake_search(tmp_path, latency_budget_ms=1.6)
    assert fake.calls == list(DEFAULT_CANDIDATES)  # the default grid, every member costed once
    by_hand = max((r for r in result.candidates if r.macs / 1e5 <= 1.6), key=lambda r: r.macs)
    assert result.chosen == by_hand
    assert any(r.macs > result.chosen.macs for r in result.candidates)  # the budget did bind
    for row in result.candidates:
        assert row.fits == (row.cost.latency_ms <= 1.6)
        assert row.why_not == ([] if row.fits else [f"latency {row.cost.latency_ms:.4g} ms (estimated) > budget 1.6 ms"])
    assert result.student_args == {"input_shape": [1, 8, 8], "num_classes": 10,
                                   "width": result.chosen.width, "depth": result.chosen.depth}
    data = json.loads(json.dumps(result.to_json()))
    assert data["chosen"] == {"width": result.chosen.width, "depth": result.chosen.depth}
    assert data["budgets"] == {"latency_ms": 1.6, "size_mb": None}
    assert set(data["candidates"][0]) >= {"width", "depth", "params", "macs", "latency_ms", "latency_method",
                                          "latency_how", "size_mb", "size_method", "size_how", "fits", "why_not"}


def test_size_budget_and_no_budget(tmp_path: Path) -> None:
    free, _ = fake_search(tmp_path)
    assert free.chosen.macs == max(r.macs for r in free.candidates)
    sized, _ = fake_search(tmp_path, latency_budget_ms=100.0, size_budget_mb=2.0)
    assert sized.chosen == max((r for r in sized.candidates if r.params / 1e4 <= 2.0), key=lambda r: r.macs)
    assert sized.chosen.macs < free.chosen.macs
    assert all(any("size" in why for why in r.why_not) for r in sized.candidates if not r.fits)


def test_none_fits_is_a_budget_violation_naming_the_smallest(tmp_path: Path) -> None:
    with pytest.raises(NoStudentFits) as exc:
        fake_search(tmp_path, latency_budget_ms=0.01, candidates=[(1.0, 1.0), (0.25, 0.5), (0.5, 1.0)])
    err = exc.value
    assert isinstance(err, BudgetViolated) and err.exit_code == EXIT_BUDGET
    smallest = min(err.result.candidates, key=lambda r: r.macs)
    assert (smallest.width, smallest.depth) == (0.25, 0.5)
    assert f"(width 0.25, depth 0.5, {smallest.macs:,} MACs)" in str(err)
    assert f"latency {smallest.cost.latency_ms:.4g} ms (estimated) vs budget 0.01 ms" in str(err)
    assert err.result.chosen is None and not any(r.fits for r in err.result.candidates)


def test_same_architecture_is_costed_once(tmp_path: Path) -> None:
    # plain_cnn: depth 0.3 and 0.5 both give one block per stage
    result, fake = fake_search(tmp_path, candidates=[(0.5, 0.5), (0.5, 0.3)])
    assert fake.calls == [(0.5, 0.5)]
    assert result.candidates[1].cost.latency_how.startswith("same architecture as width 0.5, depth 0.5")


def test_without_workdir_files_go_to_a_temporary_folder() -> None:
    seen: list[Path] = []

    def cost(c: Candidate) -> Cost:
        seen.append(c.workdir)
        assert c.workdir.is_dir()
        return Cost(1.0, "estimated", "fake", 1.0, "estimated", "fake")

    search_student("plain_cnn", SHAPE, 10, [(0.25, 0.5)], cost_fn=cost)
    assert len(seen) == 1 and not seen[0].exists()


def test_leaves_the_callers_torch_rng_alone(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fake_search(tmp_path, candidates=[(0.25, 0.5)])
    assert torch.equal(torch.rand(3), expected)


def test_user_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown student family"):
        search_student("resnet", SHAPE, 10, workdir=tmp_path, cost_fn=FakeCost())
    with pytest.raises(ConfigError, match="candidate list is empty"):
        search_student("plain_cnn", SHAPE, 10, candidates=[], workdir=tmp_path, cost_fn=FakeCost())
    with pytest.raises(ConfigError, match="\\(width, depth\\) pairs of numbers > 0"):
        search_student("plain_cnn", SHAPE, 10, candidates=[(0.5,), (0.5, -1.0)], workdir=tmp_path, cost_fn=FakeCost())
    with pytest.raises(ConfigError, match="latency_budget_ms must be > 0"):
        search_student("plain_cnn", SHAPE, 10, latency_budget_ms=0, workdir=tmp_path, cost_fn=FakeCost())
    with pytest.raises(ConfigError, match="unknown target runtime"):
        search_student("plain_cnn", SHAPE, 10, target_runtime="coreml", workdir=tmp_path, cost_fn=FakeCost())
    with pytest.raises(ConfigError, match="no \\[device\\] figures"):
        search_student("plain_cnn", SHAPE, 10, target_runtime="tensorrt", workdir=tmp_path)


def test_x86_measured_search(tmp_path: Path) -> None:
    x86 = target("x86-avx2")
    lines: list[str] = []
    result = search_student("plain_cnn", SHAPE, 10, [(0.25, 0.5), (0.5, 0.5)], latency_budget_ms=50.0,
                            size_budget_mb=1.0, workdir=tmp_path, session=x86.session, recipe=x86.quantize,
                            log=lines.append)
    assert len(lines) == 2
    assert (result.chosen.width, result.chosen.depth) == (0.5, 0.5)  # both fit a 50 ms budget: the larger wins
    for row in result.candidates:
        stem = f"plain_cnn-w{row.width:g}-d{row.depth:g}"
        assert row.cost.latency_method == "measured" and "p90 of 200 runs" in row.cost.latency_how
        assert 0 < row.cost.details["p50_ms"] <= row.cost.latency_ms < 50.0
        assert row.cost.size_mb == (tmp_path / f"{stem}_int8.onnx").stat().st_size / 1e6
        assert (tmp_path / f"{stem}.onnx").is_file()


def test_jetson_estimated_search(tmp_path: Path) -> None:
    from edgekd.analysis.estimate import estimate

    jetson = target("jetson-orin-agx")
    result = search_student("plain_cnn", (1, 28, 28), 10, [(0.25, 0.5), (0.5, 1.0)], latency_budget_ms=10.0,
                            target_runtime=jetson.runtime, device_model=jetson.device, measure_x86=True,
                            workdir=tmp_path, recipe=jetson.quantize)
    assert (result.chosen.width, result.chosen.depth) == (0.5, 1.0)
    for row in result.candidates:
        int8 = tmp_path / f"plain_cnn-w{row.width:g}-d{row.depth:g}_int8.onnx"
        assert row.cost.latency_method == "estimated" and jetson.device.name in row.cost.latency_how
        assert row.cost.latency_ms == pytest.approx(estimate(int8, jetson.device, "int8", 1).latency_ms)
    # the TensorRT recipe: symmetric int8, float biases (what the bench stage's estimate will see)
    import onnx

    model = onnx.load(str(tmp_path / "plain_cnn-w0.5-d1_int8.onnx"))
    zero_points = [i for i in model.graph.initializer if i.name.endswith("zero_point")]
    assert zero_points and all(not onnx.numpy_helper.to_array(z).any() for z in zero_points)
