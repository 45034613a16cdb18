"""Dedup finds clusters, the release chooses representatives: license-aware selection, drop state, takedowns.

Every stage runs for real (``pipeline.run_stage``, the function the Dagster assets call) on small drops written
to a landing folder; releases are staged and published with the engine functions the release assets call.
"""

from __future__ import annotations

import random

import polars as pl
import pytest

from curation_platform.config import CurationConfig
from curation_platform.explain import document_journey
from curation_platform.ledger import reconcile
from curation_platform.pipeline import FINAL_STAGE, STAGES, drop_state, run_stage
from curation_platform.release import publish_release, stage_release
from curation_platform.samples import synthetic_corpus, write_corpus_drop
from curation_platform.takedown import takedown
from curation_platform.workspace import Workspace


def _clean(n: int, seed: int) -> pl.DataFrame:
    corpus = synthetic_corpus(n, seed=seed, dup_rate=0, near_dup_rate=0, pii_rate=0, low_quality_rate=0)
    return corpus.select(pl.format("s{}-{}", pl.lit(seed), pl.col("id")).alias("id"), "text")


def _near_copy(text: str, seed: int) -> str:
    """The text with two words changed: word 5-gram Jaccard about 0.9 for a ~600-word document."""
    words = text.split(" ")
    rnd = random.Random(seed)
    for pos in rnd.sample(range(10, len(words) - 10), 2):
        words[pos] = "zebra" if words[pos] != "zebra" else "giraffe"
    return " ".join(words)


def _config() -> CurationConfig:
    return CurationConfig.model_validate({"versioning": {"enabled": False}})


def _with(cfg: CurationConfig, profile: str, name: str) -> CurationConfig:
    return cfg.model_copy(update={"release": cfg.release.model_copy(update={"profile": profile, "name": name})})


class Lake:
    def __init__(self, root):
        self.landing = root / "landing"
        self.ws = Workspace(root / "data")
        self.cfg = _config()

    def land(self, name: str, frame: pl.DataFrame, license: str) -> None:
        write_corpus_drop(self.landing, name, frame, source=name.split("-", 1)[1], license=license)

    def curate(self, name: str, stages: list[str] = STAGES) -> None:
        self.ws.register_drop(name, self.landing / name)
        for stage in stages:
            run_stage(self.ws, self.cfg, stage, name)

    def release(self, profile: str = "commercial", name: str = "latest") -> pl.DataFrame:
        cfg = _with(self.cfg, profile, name)
        current = [d.name for d in self.ws.drops() if drop_state(self.ws, cfg, d.name) == "current"]
        stage_release(self.ws, cfg, FINAL_STAGE, current, [], [], {})
        target = publish_release(self.ws, name, "test-run", cfg.hash)
        return pl.read_parquet(str(target / "shards" / "*.parquet"))

    def release_ledger(self, name: str = "latest") -> pl.DataFrame:
        return pl.read_parquet(self.ws.release_ledger_path(name))

    def doc_id(self, drop: str, source_id: str) -> str:
        raw = self.ws.read_stage("raw_documents", drop)
        return raw.filter(pl.col("source_id") == source_id)["doc_id"].item()


@pytest.fixture()
def lake(tmp_path) -> Lake:
    return Lake(tmp_path)


def _two_drops(lake: Lake, copy_text) -> tuple[str, str]:
    """Drop 1 (CC-BY-NC-4.0) holds document X; drop 2 (MIT) holds ``copy_text(X)``. Returns their doc_ids."""
    first, second = _clean(6, 1), _clean(6, 2)
    shared = first["text"][0]
    second = pl.concat([second, pl.DataFrame({"id": ["copy"], "text": [copy_text(shared)]})])
    lake.land("2026-01-nc", first, "CC-BY-NC-4.0")
    lake.land("2026-02-mit", second, "MIT")
    lake.curate("2026-01-nc")
    lake.curate("2026-02-mit")
    return lake.doc_id("2026-01-nc", first["id"][0]), lake.doc_id("2026-02-mit", "copy")


@pytest.mark.parametrize(("kind", "copy_text"), [("exact", lambda t: t), ("near", lambda t: _near_copy(t, 3))])
def test_commercial_release_ships_the_mit_copy_of_an_earlier_nc_document(lake, kind, copy_text):
    nc, mit = _two_drops(lake, copy_text)
    # Dedup stages keep both copies and record the pair instead of dropping the later copy.
    for drop in ("2026-01-nc", "2026-02-mit"):
        assert reconcile(lake.ws, drop, STAGES) == []
    assert {nc, mit} <= set(lake.ws.read_stage(FINAL_STAGE, "2026-02-mit")["doc_id"]) | set(
        lake.ws.read_stage(FINAL_STAGE, "2026-01-nc")["doc_id"])

    commercial = lake.release("commercial", "latest")
    assert mit in commercial["doc_id"].to_list() and nc not in commercial["doc_id"].to_list()
    assert commercial.height == 7  # every document of the MIT drop, the copy included
    research = lake.release("research", "research")
    ids = research["doc_id"].to_list()
    # Research allows both licenses: exactly one copy ships, the earlier drop's (keep rule: drop order first).
    assert (nc in ids) != (mit in ids) and nc in ids
    removed = lake.release_ledger("research").filter(pl.col("doc_id") == mit).row(0, named=True)
    assert removed["rule"] == f"dedup.{kind}" and removed["duplicate_of"] == nc

    # explain names the representative per release and why.
    why_mit = document_journey(lake.ws, mit)
    assert f"represents its cluster in release latest over {nc}" in why_mit
    assert "not allowed in profile commercial" in why_mit
    (research_line,) = [line for line in why_mit.splitlines() if line.strip().startswith("release research")]
    # The representative is named once on its line, and why it represents the cluster.
    assert research_line.count(nc) == 1 and "represents the cluster in release research" in research_line
    why_nc = document_journey(lake.ws, nc)
    assert f"represents its cluster in release research over {mit}" in why_nc
    assert f"its copy {mit} (MIT) represents the cluster in release latest instead" in why_nc
    if kind == "near":
        jaccard = lake.release_ledger("research").filter(pl.col("doc_id") == mit)["value"].item()
        assert 0.8 <= jaccard < 1.0


def test_a_stale_earlier_drop_removes_nothing_and_recuration_cascades(lake):
    nc, mit = _two_drops(lake, lambda t: t)
    research = lake.release("research", "research")
    assert nc in research["doc_id"].to_list() and mit not in research["doc_id"].to_list()

    # Drop 1's files change and its curation stops after `filtered` (as when a gate fails): it is stale.
    lake.land("2026-01-nc", _clean(6, 1), "CC-BY-NC-4.0")
    lake.curate("2026-01-nc", STAGES[: STAGES.index("filtered") + 1])
    assert drop_state(lake.ws, lake.cfg, "2026-01-nc") == "stale"
    research = lake.release("research", "research")
    # Its stale index entries remove nothing: the copy in drop 2 ships now, and the ledger says what changed.
    assert mit in research["doc_id"].to_list() and nc not in research["doc_id"].to_list()
    cascade = lake.release_ledger("research").filter(pl.col("rule") == "dedup.reevaluated")
    assert cascade["doc_id"].to_list() == [mit]
    assert f"dedup.exact of {nc}" in cascade["detail"][0] and "now it represents its cluster" in cascade["detail"][0]
    assert "dedup.reevaluated" in document_journey(lake.ws, mit)

    # Re-curated, drop 1 takes its place back, and the change is recorded again.
    lake.curate("2026-01-nc")
    research = lake.release("research", "research")
    assert nc in research["doc_id"].to_list() and mit not in research["doc_id"].to_list()
    rows = lake.release_ledger("research").filter(pl.col("doc_id") == mit)
    assert sorted(rows["rule"]) == ["dedup.exact", "dedup.reevaluated"]
    cascade = rows.filter(pl.col("rule") == "dedup.reevaluated")["detail"].item()
    assert "shipped as its cluster's representative" in cascade and f"now dedup.exact of {nc}" in cascade


def test_the_dedup_stage_records_a_later_copy_and_drops_nothing(lake):
    """The dedup stages drop no copy, whatever state the earlier drop is in: only the release chooses."""
    nc, mit = _two_drops(lake, lambda t: t)
    exact = pl.read_parquet(lake.ws.ledger_path("exact_deduped", "2026-02-mit"))
    row = exact.filter(pl.col("doc_id") == mit)
    assert set(row["verdict"]) == {"keep", "flag"}
    assert row.filter(pl.col("verdict") == "flag")["duplicate_of"].item() == nc


def test_takedown_blocks_content_in_new_drops_and_frees_former_duplicates(lake):
    first, second = _clean(6, 1), _clean(6, 2)
    shared = first["text"][0]
    lake.land("2026-01-a", first, "MIT")
    lake.land("2026-02-b", pl.concat([second, pl.DataFrame({"id": ["copy"], "text": [shared]})]), "MIT")
    lake.curate("2026-01-a")
    lake.curate("2026-02-b")
    original, former_duplicate = lake.doc_id("2026-01-a", first["id"][0]), lake.doc_id("2026-02-b", "copy")
    shipped = lake.release()["doc_id"].to_list()
    assert original in shipped and former_duplicate not in shipped

    assert takedown(lake.ws, doc_ids=[original], reason="DMCA 42") == 1
    # The former duplicate is chosen again by the next release; the original never ships.
    shipped = lake.release()["doc_id"].to_list()
    assert former_duplicate in shipped and original not in shipped

    # The same content arriving later, exactly or nearly, from another source, is blocked.
    third = pl.DataFrame({"id": ["again", "nearly"], "text": [shared, _near_copy(shared, 5)]})
    lake.land("2026-03-c", pl.concat([_clean(4, 3), third]), "MIT")
    lake.curate("2026-03-c")
    ledger = pl.concat([pl.read_parquet(lake.ws.ledger_path(stage, "2026-03-c"))
                        for stage in ("exact_deduped", "near_deduped")])
    blocked = ledger.filter(pl.col("rule") == "takedown.blocked")
    again, nearly = lake.doc_id("2026-03-c", "again"), lake.doc_id("2026-03-c", "nearly")
    assert dict(zip(blocked["doc_id"], blocked["stage"])) == {again: "exact_deduped", nearly: "near_deduped"}
    assert set(blocked["duplicate_of"]) == {original} and (blocked["verdict"] == "drop").all()
    assert reconcile(lake.ws, "2026-03-c", STAGES) == []
    shipped = lake.release()["doc_id"].to_list()
    assert again not in shipped and nearly not in shipped and former_duplicate in shipped
    assert "takedown.blocked" in document_journey(lake.ws, nearly)
