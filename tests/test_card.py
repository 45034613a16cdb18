"""The data card: numbers that reconcile with the ledger and shards, plots, the Hugging Face header, and the
optional sections other release steps add.

A small lake is written by hand (curated final-stage files and per-drop ledgers, shaped as the stages write them);
the release is staged and published by the engine functions the release assets call, so no Dagster run is needed.
The same checks on the real sample run are in ``test_card_of_the_sample_run_reconciles_with_its_ledger``.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path

import duckdb
import polars as pl
import pytest
import yaml

from curation_platform.config import CurationConfig
from curation_platform.hashing import xxh128_hex
from curation_platform.ledger import all_stage_counts, ledger_rows, rule_counts
from curation_platform.pipeline import FINAL_STAGE, STAGES
from curation_platform.plots import PNG_SIGNATURE
from curation_platform.records import verdict_frame
from curation_platform.release import card_markdown, publish_release, stage_release
from curation_platform.workspace import Workspace, write_parquet_atomic

WORDS = ["river", "stone", "harbor", "lantern", "meadow", "orchard", "violin", "compass", "thunder", "saffron",
         "glacier", "pepper"]


def _text(seed: int, words: int) -> str:
    return " ".join(WORDS[(seed * 7 + i * 3) % len(WORDS)] for i in range(words)) + "."


class HandmadeLake:
    """Curated drops written as the stages write them: the final stage's documents and a ledger per stage."""

    def __init__(self, root: Path):
        self.ws = Workspace(root / "data")
        self.landing = root / "landing"
        self.cfg = CurationConfig.model_validate({"versioning": {"enabled": False}})

    def drop(self, name: str, source: str, docs: list[dict], removed: dict[str, tuple[str, str]] | None = None,
             quarantined: int = 0) -> pl.DataFrame:
        """``docs``: dicts with at least ``id`` and ``text`` (optional ``license``, ``kind``, ``language``,
        ``quality_score``); ``removed``: extra source ids dropped at a stage, ``id -> (stage, rule)``."""
        (self.landing / name).mkdir(parents=True, exist_ok=True)
        self.ws.register_drop(name, self.landing / name)
        frame = pl.DataFrame([{
            "doc_id": f"{name}:{d['id']}", "source": source, "drop": name, "source_id": d["id"],
            "license": d.get("license", "CC-BY-4.0"), "kind": d.get("kind", "web"),
            "language": d.get("language", "en"), "text": d["text"],
            "provenance": json.dumps({"url": f"https://example.org/{source}"}),
            "quality_score": d.get("quality_score", 0.8), "word_count": len(d["text"].split()),
        } for d in docs])
        frame = frame.with_columns(xxh128_hex(frame["text"]).alias("content_hash"))
        write_parquet_atomic(frame, self.ws.stage_path(FINAL_STAGE, name))
        removed = removed or {}
        lost = [f"{name}:q{i}" for i in range(quarantined)]
        entered = frame["doc_id"].to_list() + [f"{name}:{i}" for i in removed]
        verdicts = {
            "raw_documents": [{"doc_id": q, "verdict": "quarantine", "rule": "ingest.quarantined"} for q in lost],
            **{stage: [] for stage in ("filtered", FINAL_STAGE)},
        }
        for source_id, (stage, rule) in removed.items():
            verdicts[stage].append({"doc_id": f"{name}:{source_id}", "verdict": "drop", "rule": rule})
        inputs = entered + lost
        for stage, rows in verdicts.items():
            frame_rows = verdict_frame(pl.DataFrame(rows, schema={"doc_id": pl.String, "verdict": pl.String,
                                                                  "rule": pl.String}))
            ledger = ledger_rows(stage=stage, drop=name, input_ids=pl.Series(inputs), verdicts=frame_rows,
                                 run_id="test", config_hash=self.cfg.drop_stages_hash)
            write_parquet_atomic(ledger, self.ws.ledger_path(stage, name))
            inputs = ledger.filter(pl.col("verdict") == "keep")["doc_id"].to_list()
        return frame

    def release(self, drops: list[str], name: str = "latest", profile: str = "commercial") -> Path:
        cfg = self.cfg.model_copy(update={"release": self.cfg.release.model_copy(
            update={"name": name, "profile": profile})})
        stage_release(self.ws, cfg, FINAL_STAGE, drops, all_stage_counts(self.ws, STAGES),
                               rule_counts(self.ws), {})
        return publish_release(self.ws, name, "test-run", cfg.hash)


def _two_drop_lake(root: Path) -> HandmadeLake:
    lake = HandmadeLake(root)
    lake.drop("2026-01-news", "news", [
        {"id": f"n{i}", "text": _text(i, 40 + 30 * i), "quality_score": 0.5 + 0.05 * i} for i in range(6)
    ] + [{"id": "copy", "text": _text(0, 40)},  # an exact copy of n0: the release ships one
         {"id": "nc", "text": _text(9, 55), "license": "CC-BY-NC-4.0"},  # not in the commercial profile
         {"id": "de", "text": _text(11, 25), "language": "de"}],
        removed={"short": ("filtered", "gopher_quality.min_words")}, quarantined=2)
    lake.drop("2026-02-code", "code-mirror", [
        {"id": f"c{i}", "text": f"def f{i}(x):\n    return x * {i}\n" * (i + 1), "kind": "code",
         "language": "python", "license": "MIT"} for i in range(3)])
    return lake


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> tuple[HandmadeLake, Path]:
    lake = _two_drop_lake(tmp_path_factory.mktemp("card"))
    return lake, lake.release(["2026-01-news", "2026-02-code"])


def test_card_numbers_reconcile_with_the_ledger_and_shards(released):
    lake, target = released
    assert_card_reconciles(lake.ws, target)
    card = json.loads((target / "data_card.json").read_text())
    # The planted removals, named by their rules.
    assert card["release_removals"] == {"dedup.exact": 1, "license.not_in_profile": 1}
    news = next(d for d in card["per_drop"] if d["drop"] == "2026-01-news")
    assert (news["curated"], news["released"]) == (9, 7)


def assert_card_reconciles(ws: Workspace, target: Path) -> None:
    """Every count of the card, recomputed with DuckDB from the ledger files and the released shards."""
    card = json.loads((target / "data_card.json").read_text())
    shards = str(target / "shards" / "*.parquet")
    ledgers = [p for p in glob.glob(str(ws.root / "ledger" / "*" / "*.parquet")) if "/release/" not in p]
    con = duckdb.connect()
    con.execute(f"CREATE VIEW shards AS SELECT * FROM read_parquet('{shards}', union_by_name=true)")
    con.execute(f"CREATE VIEW ledger AS SELECT * FROM read_parquet({ledgers}, union_by_name=true)")
    con.execute(f"CREATE VIEW rel AS SELECT * FROM read_parquet('{target / 'release_verdicts.parquet'}')")

    def rows(sql: str) -> set[tuple]:
        return set(con.execute(sql).fetchall())

    assert (card["documents"], card["tokens"]) == con.execute(
        "SELECT count(*), sum(token_count) FROM shards").fetchone()
    assert rows("SELECT stage, count(*), count(*) FILTER (verdict = 'keep'), count(*) FILTER (verdict = 'drop'), "
                "count(*) FILTER (verdict = 'quarantine') FROM ledger "
                "WHERE verdict IN ('keep', 'drop', 'quarantine') GROUP BY stage") == {
        (s["stage"], s["input"], s["kept"], s["dropped"], s["quarantined"]) for s in card["stages"]}
    assert rows("SELECT stage, rule, count(*) FROM ledger WHERE verdict IN ('drop', 'quarantine') GROUP BY ALL") == {
        (r["stage"], r["rule"], r["documents"]) for r in card["rules"]}
    assert rows("SELECT rule, count(*) FROM rel WHERE verdict = 'drop' GROUP BY rule") == set(
        card["release_removals"].items())
    for key, column in (("languages", "language"), ("kinds", "kind"), ("licenses", "license")):
        assert rows(f"SELECT {column}, count(*), sum(token_count) FROM shards GROUP BY ALL") == {
            (r[column], r["documents"], r["tokens"]) for r in card[key]}, key
    assert rows("SELECT source, \"drop\", license, count(*), sum(token_count) FROM shards GROUP BY ALL") == {
        (s["source"], s["drop"], s["license"], s["documents"], s["tokens"]) for s in card["sources"]}
    # Per drop: every document the final stage kept is released or left out by exactly one release rule.
    final = str(ws.root / "stages" / FINAL_STAGE / "*.parquet")
    # The drop is the file's name (decide-only stage files hold doc_id and their own columns only).
    curated = dict(con.execute(
        f"SELECT regexp_extract(filename, '([^/]+)\\.parquet$', 1), count(*) "
        f"FROM read_parquet('{final}', filename = true) GROUP BY ALL").fetchall())
    released = dict(con.execute("SELECT \"drop\", count(*) FROM shards GROUP BY ALL").fetchall())
    left_out = rows("SELECT \"drop\", rule, count(*) FROM rel WHERE verdict = 'drop' GROUP BY ALL")
    for d in card["per_drop"]:
        assert d["curated"] == curated[d["drop"]] == d["released"] + sum(d["left_out"].values())
        assert d["released"] == released.get(d["drop"], 0)
        assert {(d["drop"], r, n) for r, n in d["left_out"].items()} == {x for x in left_out if x[0] == d["drop"]}


def test_release_plots_are_valid_pngs_linked_from_the_card(released):
    _, target = released
    card = json.loads((target / "data_card.json").read_text())
    # The selection plot comes from the release's selection report (tokens available and selected per domain).
    assert sorted(Path(p).stem for p in card["plots"]) == ["lengths", "mixture", "removals", "scores", "selection"]
    markdown = (target / "data_card.md").read_text()
    for plot in card["plots"]:
        data = (target / plot).read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 2000
        assert f"]({plot})" in markdown
    assert len({(target / p).read_bytes() for p in card["plots"]}) == len(card["plots"])


def test_hugging_face_header_parses_and_matches_the_shards(released):
    _, target = released
    readme = (target / "README.md").read_text()
    assert readme.startswith("---\n")
    header = yaml.safe_load(readme.split("---\n")[1])
    shards = pl.read_parquet(str(target / "shards" / "*.parquet"))
    assert sorted(header["license"]) == sorted(shards["license"].str.to_lowercase().unique())
    assert header["language"] == ["de", "en"]  # lid.176 codes; python is a programming language, not listed
    assert header["size_categories"] == ["n<1K"] and header["task_categories"] == ["text-generation"]
    assert {"code", "web"} <= set(header["tags"]) and header["pretty_name"]
    (config,) = header["configs"]
    matched = [f for entry in config["data_files"] for f in glob.glob(str(target / entry["path"]))]
    # The globs cover every shard exactly once, and train comes first.
    assert sorted(matched) == sorted(glob.glob(str(target / "shards" / "*.parquet")))
    assert config["data_files"][0]["split"] == "train"


def test_header_names_train_and_validation_splits_from_the_shard_names():
    from curation_platform.card import data_files

    assert data_files(["validation-00000.parquet", "train-00001.parquet", "train-00000.parquet"]) == [
        {"split": "train", "path": "shards/train-*.parquet"},
        {"split": "validation", "path": "shards/validation-*.parquet"}]


def test_optional_sections_render_when_present_and_are_skipped_when_absent(released):
    _, target = released
    card = json.loads((target / "data_card.json").read_text())
    extra = {
        "selection": {"domains": {"news": {"available": 900, "selected": 700, "repeated": 0}},
                      "split": {"train": 7, "validation": 1}},
        "quality_model": {"name": "fasttext-bigram", "version": "abc123", "heldout_auc": 0.91},
        "verification": {"tests_run": 4, "passed": 3, "failed": 1},
    }
    card.pop("formatting", None)  # the release always reports its chat template: take it out to test absence
    markdown = card_markdown({**card, **extra})
    assert "## Selection and mixture" in markdown and "| news | 900 | 0 | 700 |" in markdown
    assert "- heldout_auc: 0.91" in markdown and "- failed: 1" in markdown
    assert "## Formatting" not in markdown  # absent key, no empty section
    from curation_platform.card import card_plots, selection_per_domain

    assert selection_per_domain(extra["selection"]) == [{"domain": "news", "available": 900, "selected": 700}]
    assert selection_per_domain({"domains": [{"domain": "web", "tokens_available": 5, "tokens_selected": 4}]}) == [
        {"domain": "web", "available": 5, "selected": 4}]
    assert selection_per_domain(None) == [] and selection_per_domain({"split": {}}) == []
    plot = card_plots({**card, **extra}, pl.DataFrame())["selection"]
    assert plot[:8] == PNG_SIGNATURE and len(plot) > 2000
