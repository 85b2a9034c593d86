"""benchmarks/decoder_families.py, decoder_coverage.py and embedding_table.py: their committed .md results are what their
report functions render from the committed .json (no hand-edited number), and the ratios are the
measured p50s' ratios."""
from __future__ import annotations

import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))


def test_decoder_families_md_is_rendered_from_its_json() -> None:
    import decoder_families

    result = json.loads((BENCHMARKS / "results" / "decoder_families.json").read_text())
    text = decoder_families.report(result)
    assert text == (BENCHMARKS / "results" / "decoder_families.md").read_text()
    for row in result["families"]:
        stats = row["stats"]
        ratio = stats["int4-fused"]["decode"]["p50_ms"] / stats["int4-export"]["decode"]["p50_ms"]
        assert f"| {row['family']} | int4 fused | " in text and f"{ratio:.2f} (decode)" in text
        assert row["fused_max_rel_diff"] < 1e-3  # the fused graph computed what the export computes


def test_decoder_coverage_md_is_rendered_from_its_json() -> None:
    import decoder_coverage

    result = json.loads((BENCHMARKS / "results" / "decoder_coverage.json").read_text())
    text = decoder_coverage.report(result["families"], result["commit"])
    assert text == (BENCHMARKS / "results" / "decoder_coverage.md").read_text()
    assert set(result["families"]) == set(decoder_coverage.FAMILIES)
    assert all(r.get("exit_code") == 0 for r in result["families"].values())


def test_embedding_table_md_is_rendered_from_its_json() -> None:
    import embedding_table

    result = json.loads((BENCHMARKS / "results" / "embedding_table.json").read_text())
    assert embedding_table.report(result) == (BENCHMARKS / "results" / "embedding_table.md").read_text()
    rows = result["rows"]
    assert set(rows) == {"int4", "int4-emb4"} and rows["int4-emb4"]["size_mb"] < rows["int4"]["size_mb"]
