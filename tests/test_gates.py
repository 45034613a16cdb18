import json
import subprocess
import sys

import polars as pl
import pytest
import yaml

from curation_platform.audit import reconciliation_counts, release_gate, stage_gate
from curation_platform.config import CurationConfig
from curation_platform.gates import counts_expectations, identity_expectations, validate
from curation_platform.pipeline import STAGES, UPSTREAM, run_stage
from curation_platform.workspace import Workspace


def test_identity_gate_names_the_failing_expectations_and_counts():
    frame = pl.DataFrame({"doc_id": ["a", "a", "b"], "source": ["s"] * 3, "license": ["MIT", None, "MIT"]})
    result = validate("t", frame, identity_expectations(["doc_id", "source", "license"]))
    assert not result.passed
    text = " ".join(result.failures)
    assert "expect_column_values_to_be_unique(column=doc_id)" in text and "'unexpected_count': 2" in text
    assert "expect_column_values_to_not_be_null(column=license)" in text


def test_a_gate_runs_without_importing_what_gx_only_needs_for_features_no_gate_uses():
    # A fresh interpreter: a failing gate still reports its counts, scipy.stats and altair stay unimported (about
    # 1.3 s of every run's start-up), and code that imports them afterwards gets the real modules.
    code = """
import sys
import polars as pl
from curation_platform.gates import identity_expectations, validate
result = validate("t", pl.DataFrame({"doc_id": ["a", "a"], "source": ["s", "s"], "license": ["MIT", None]}),
                  identity_expectations(["doc_id", "source", "license"]))
print(result.passed, "'unexpected_count': 2" in " ".join(result.failures))
print(sorted(m for m in ("scipy.stats._stats_py", "altair.vegalite") if m in sys.modules))
from scipy import stats
import altair
print(round(float(stats.norm.cdf(0.0)), 2), altair.Chart.__name__, "scipy.stats._stats_py" in sys.modules)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.split("\n")[:3] == ["False True", "[]", "0.5 Chart True"]


def test_counts_gate_enforces_reconciliation_and_removal_bound():
    ok = pl.DataFrame({"input": [10], "accounted": [10], "upstream_kept": [10], "removal_rate": [0.3]})
    assert validate("ok", ok, counts_expectations(0.5)).passed
    lost = ok.with_columns(pl.lit(9).alias("accounted"))
    assert not validate("lost", lost, counts_expectations(0.5)).passed
    too_many = ok.with_columns(pl.lit(0.6).alias("removal_rate"))
    failed = validate("rate", too_many, counts_expectations(0.5))
    assert not failed.passed and "removal_rate" in failed.failures[0]


# --- reconciliation from the ledger ----------------------------------------------------------------------------

_TEXTS = [f"Paragraph {i} about the harbor, the market and the old bridge in town." for i in range(6)]


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    """A real workspace: one small drop (six records, one malformed line) through raw_documents and normalized."""
    root = tmp_path_factory.mktemp("gates")
    drop = root / "landing" / "d1"
    drop.mkdir(parents=True)
    (drop / "manifest.yaml").write_text(yaml.safe_dump(
        {"source": "s", "kind": "text", "license": "MIT", "provenance": {"description": "test"}}))
    lines = [json.dumps({"id": str(i), "text": t}) for i, t in enumerate(_TEXTS)] + ["{not json"]
    (drop / "data.jsonl").write_text("\n".join(lines) + "\n")
    ws = Workspace(root / "ws")
    ws.register_drop("d1", drop)
    cfg = CurationConfig()
    for stage in STAGES[: STAGES.index("normalized") + 1]:
        run_stage(ws, cfg, stage, "d1")
    return ws, cfg


def _reconciliation(ws, cfg, stage, upstream):
    results = {r.name: r for r in stage_gate(ws, cfg, stage, upstream, "d1")}
    return results[f"{stage}.reconciliation"]


def test_untouched_ledger_reconciles(curated):
    ws, cfg = curated
    assert _reconciliation(ws, cfg, "raw_documents", None).passed
    assert _reconciliation(ws, cfg, "normalized", UPSTREAM["normalized"]).passed
    counts = reconciliation_counts(ws, "raw_documents", None, "d1").row(0, named=True)
    assert counts["input"] == 7 and counts["kept"] == 6 and counts["accounted"] == 7


def _missing(ledger: pl.DataFrame) -> pl.DataFrame:
    return ledger.slice(1)


def _duplicated(ledger: pl.DataFrame) -> pl.DataFrame:
    return pl.concat([ledger, ledger.head(1)])


def _extra(ledger: pl.DataFrame) -> pl.DataFrame:
    return pl.concat([ledger, ledger.head(1).with_columns(pl.lit("ghost").alias("doc_id"))])


def _swapped(ledger: pl.DataFrame) -> pl.DataFrame:
    # Same row count: one document's row now names a document that never entered the stage.
    return ledger.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("ghost"))
                               .otherwise(pl.col("doc_id")).alias("doc_id"))


def _duplicated_and_missing(ledger: pl.DataFrame) -> pl.DataFrame:
    # Same row count: one document decided twice, another never.
    return pl.concat([ledger.head(1), ledger.head(1), ledger.slice(2)])


@pytest.mark.parametrize("corrupt", [_missing, _duplicated, _extra, _swapped, _duplicated_and_missing])
@pytest.mark.parametrize(("stage", "upstream"), [("normalized", UPSTREAM["normalized"]), ("raw_documents", None)])
def test_corrupted_ledger_fails_the_reconciliation_gate(curated, corrupt, stage, upstream):
    ws, cfg = curated
    path = ws.ledger_path(stage, "d1")
    original = path.read_bytes()
    try:
        corrupt(pl.read_parquet(path).sort("doc_id")).write_parquet(path)
        result = _reconciliation(ws, cfg, stage, upstream)
        assert not result.passed, corrupt.__name__
        assert result.failures
    finally:
        path.write_bytes(original)
    assert _reconciliation(ws, cfg, stage, upstream).passed


# --- release license audit -------------------------------------------------------------------------------------


def _stage_shards(tmp_path, licenses: list[str | None]):
    staging = tmp_path / "staging"
    (staging / "shards").mkdir(parents=True)
    n = len(licenses)
    pl.DataFrame({
        "doc_id": [f"doc{i}" for i in range(n)], "source": ["s"] * n, "drop": ["d1"] * n,
        "source_id": [str(i) for i in range(n)], "license": licenses, "kind": ["text"] * n,
        "text": ["clean text"] * n,
    }, schema_overrides={"license": pl.String}).write_parquet(staging / "shards" / "part-00000.parquet")
    residual = pl.DataFrame({"doc_id": [f"doc{i}" for i in range(n)], "residual_pii": [0] * n})
    return staging, residual


def _license_gate(cfg, staging, residual):
    return {r.name: r for r in release_gate(cfg, staging, residual)}["release.license_policy"]


def test_release_license_audit_passes_allowed_licenses(tmp_path):
    staging, residual = _stage_shards(
        tmp_path, ["MIT", "Apache-2.0", "LicenseRef-scancode-public-domain", "MIT OR CC-BY-NC-4.0", "CC0-1.0",
                   # Known to the bundled ScanCode database, not to license-expression's older vendored index.
                   "LicenseRef-scancode-bsd-axis"])
    assert _license_gate(CurationConfig(), staging, residual).passed


@pytest.mark.parametrize("planted", ["CC-BY-NC-4.0", "MIT AND CC-BY-NC-4.0", "Proprietary - ask legal", "( )", None])
def test_planted_document_in_the_staged_shards_fails_the_release_gate(tmp_path, planted):
    staging, residual = _stage_shards(tmp_path, ["MIT", "Apache-2.0", planted])
    result = _license_gate(CurationConfig(), staging, residual)
    assert not result.passed
    assert "violation" in result.description


def test_release_license_audit_does_not_reuse_the_selection_function(tmp_path, monkeypatch):
    # Even if the selection's classifier wrongly allowed everything, the audit still catches the NC document.
    import curation_platform.licenses as licenses

    monkeypatch.setattr(licenses, "license_allowed", lambda values, profile: pl.Series([True] * len(values)))
    staging, residual = _stage_shards(tmp_path, ["MIT", "CC-BY-NC-4.0"])
    result = _license_gate(CurationConfig(), staging, residual)
    assert not result.passed
    assert "CC-BY-NC-4.0" in result.description and "non-commercial" in result.description
def test_identity_gate_fails_on_a_missing_column_and_gates_do_not_leak_into_each_other():
    from curation_platform.gates import _context

    full = pl.DataFrame({"doc_id": ["a", "b"], "source": ["s", "s"], "license": ["MIT", "MIT"]})
    missing = full.drop("source").with_columns(pl.lit("s").alias("other"))
    assert validate("full", full, identity_expectations(["doc_id", "source", "license"])).passed
    result = validate("missing", missing, identity_expectations(["doc_id", "license", "source"]))
    assert not result.passed and any("source" in f for f in result.failures)
    # The same process validates the next frame on its own data (one cached GX asset, frames as batch parameters).
    assert validate("full again", full, identity_expectations(["doc_id", "source", "license"])).passed
    assert len(_context()[1].assets) == 1


def test_scored_gate_fails_on_a_score_out_of_range_or_a_kept_document_under_min_score(tmp_path):
    from curation_platform.audit import stage_residue
    from curation_platform.workspace import write_parquet_atomic

    ws = Workspace(tmp_path / "data")
    cfg = CurationConfig.model_validate({"scoring": {"min_score": 0.3, "per_source": {"b": {"min_score": 0.2}}}})
    ids = {"doc_id": ["a", "b", "c"], "source": "s", "drop": "d", "source_id": ["1", "2", "3"], "license": "MIT",
           "kind": "web"}
    write_parquet_atomic(pl.DataFrame({**ids, "quality_score": [0.9, 0.25, 0.5]}), ws.stage_path("scored", "d"))
    residue = stage_residue(ws, cfg, "scored", "d")
    assert residue["score_out_of_range"].sum() == 0 and residue["kept_below_min_score"].sum() == 0
    from curation_platform.gates import max_value_expectation

    checks = [max_value_expectation(c, 0) for c in ("score_out_of_range", "kept_below_min_score")]
    assert validate("scored.residual", residue, checks).passed
    # A score of 1.5 and a kept document at 0.1, under every configured minimum: both fail the gate.
    write_parquet_atomic(pl.DataFrame({**ids, "quality_score": [1.5, 0.1, None]}), ws.stage_path("scored", "d"))
    residue = stage_residue(ws, cfg, "scored", "d")
    assert residue.sort("doc_id")["score_out_of_range"].to_list() == [1, 0, 1]
    assert residue.sort("doc_id")["kept_below_min_score"].to_list() == [0, 1, 0]
    gate = validate("scored.residual", residue, checks)
    assert not gate.passed and any("score_out_of_range" in f for f in gate.failures)


def test_release_residue_scans_many_small_shards_in_batches_and_still_finds_planted_pii(tmp_path, monkeypatch):
    # One shard per drop: a release of a long drop history has hundreds of small shards. The re-scan reads them
    # batch_rows documents at a time across shards (each scan pays a fixed cost), and finds PII in any of them.
    import curation_platform.audit as audit

    staging = tmp_path / "staging"
    (staging / "shards").mkdir(parents=True)
    for shard in range(12):
        texts = [f"shard {shard} document {i} is clean prose about rivers and hills." for i in range(5)]
        if shard == 7:
            texts[3] = "Write to jane.doe@example.com or call +1 415 555 0134 for the minutes."
        pl.DataFrame({"doc_id": [f"s{shard}-{i}" for i in range(5)], "text": texts}).write_parquet(
            staging / "shards" / f"train-{shard:05d}.parquet")
    cfg = CurationConfig.model_validate({"engine": {"batch_rows": 25}})
    scans = []
    real = audit.residue
    monkeypatch.setattr(audit, "residue", lambda docs, *a: scans.append(docs.height) or real(docs, *a))

    frame = audit.release_residue(cfg, staging)

    assert scans == [25, 25, 10]  # 60 documents of 12 shards in 3 scans, not 12
    assert frame.height == 60 and frame["doc_id"].n_unique() == 60
    assert frame.filter(pl.col("residual_pii") > 0)["doc_id"].to_list() == ["s7-3"]
    assert frame["benchmark_overlap"].sum() == 0
