"""`curate whatif` for score selection, on a tiny workspace whose `scored` stage ran for real."""

from __future__ import annotations

import polars as pl
import pytest

from curation_platform.config import CurationConfig
from curation_platform.errors import CurationError
from curation_platform.ops.score import ScoreFeature
from curation_platform.pipeline import run_stage
from curation_platform.whatif import threshold_whatif
from curation_platform.workspace import Workspace, write_parquet_atomic


@pytest.fixture()
def scored_workspace(tmp_path):
    """Two drops whose `scored` stage ran with min_score 0.25: scores are word_count / 100."""
    ws = Workspace(tmp_path / "data")
    cfg = CurationConfig.model_validate({"scoring": {"min_score": 0.25}})
    cfg.scoring.features = [ScoreFeature(signal="word_count", bad=0, good=100)]
    for drop, counts, source in (("d1", [5, 15, 35, 55, 75, 95], "news"), ("d2", [10, 30, 50, 70], "forum")):
        docs = pl.DataFrame({"doc_id": [f"{drop}-{c:02d}" for c in counts], "source": source, "kind": "web",
                             "text": "x", "word_count": [float(c) for c in counts]})
        write_parquet_atomic(docs, ws.stage_path("filtered", drop))
        run_stage(ws, cfg, "scored", drop)
    return ws, cfg


def _counts(table: pl.DataFrame) -> dict[str, tuple[int, int]]:
    return {r["drop"]: (r["added"], r["removed"]) for r in table.iter_rows(named=True)}


def test_whatif_previews_min_score_both_ways(scored_workspace):
    ws, cfg = scored_workspace
    # Kept now (min_score 0.25): d1 35,55,75,95 and d2 30,50,70. At 0.6: d1 loses 35,55; d2 loses 30,50.
    assert _counts(threshold_whatif(ws, cfg, "scoring.min_score", 0.6)) == {"d1": (0, 2), "d2": (0, 2)}
    # At 0.1: d1 gets 15 back (5 stays out), d2 gets 10 back (0.1 >= 0.1).
    table = threshold_whatif(ws, cfg, "scoring.min_score", 0.1)
    assert _counts(table) == {"d1": (1, 0), "d2": (1, 0)}
    assert table.filter(pl.col("drop") == "d1")["example_added"][0].to_list() == ["d1-15"]


def test_whatif_previews_top_fraction_per_drop_and_per_source(scored_workspace):
    ws, cfg = scored_workspace
    # Top half of each drop (3 of 6, 2 of 4), with min_score 0.25 still applied.
    assert _counts(threshold_whatif(ws, cfg, "scoring.top_fraction", 0.5)) == {"d1": (0, 1), "d2": (0, 1)}
    # Only the forum source keeps its top quarter (1 of 4).
    table = threshold_whatif(ws, cfg, "scoring.per_source.forum.top_fraction", 0.25)
    assert _counts(table) == {"d1": (0, 0), "d2": (0, 2)}
    assert sorted(table.filter(pl.col("drop") == "d2")["example_removed"][0].to_list()) == ["d2-30", "d2-50"]
    with pytest.raises(CurationError, match="not a valid setting"):
        threshold_whatif(ws, cfg, "scoring.top_fraction", 1.5)


def test_cli_accepts_per_source_score_settings(scored_workspace):
    from tests.conftest import REPO, run_cli

    ws, _ = scored_workspace
    # With curation.yaml's selection (min_score 0): d1 gets 5 and 15 back; forum keeps its best quarter (70 of d2).
    code, output = run_cli("whatif", "--set", "scoring.per_source.forum.top_fraction=0.25", "--workspace",
                           str(ws.root), "--config", str(REPO / "curation.yaml"))
    assert code == 0, output
    rows = {line.split()[0]: line.split()[2:4] for line in output.splitlines() if line.startswith(("d1 ", "d2 "))}
    assert rows == {"d1": ["2", "0"], "d2": ["0", "2"]}
