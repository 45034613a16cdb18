"""The real Dagster graph, in-process through `curate run`, on the bundled sample drops, with a real git+DVC
repository and a local DVC remote."""

import itertools
import json
import re

import polars as pl
import pytest
import yaml

from curation_platform.ledger import reconcile, stage_counts
from curation_platform.pipeline import STAGES
from curation_platform.samples import synthetic_corpus, write_corpus_drop
from curation_platform.workspace import Workspace
from tests.conftest import REPO, run_cli

CONFIG = str(REPO / "curation.yaml")


# `project` (tests/conftest.py): one run of the sample drops per test session, shared with
# tests/test_sample_outcomes.py. Tests here that rerun or interrupt it leave the release byte-identical, which they
# assert.


def test_run_succeeds_and_prints_progress_and_summary(project):
    root, code, output = project
    assert code == 0, output
    for stage in STAGES:
        assert stage in output
    assert "release 'latest'" in output and "documents" in output


def test_counts_reconcile_for_every_drop(project):
    root, _, _ = project
    ws = Workspace(root / "data")
    for drop in ws.drops():
        read = stage_counts(ws, drop.name, STAGES).row(0, named=True)["input"]
        raw_files = ws.read_stage("raw_documents", drop.name, ["doc_id"]).height
        quarantined = pl.read_parquet(ws.quarantine_path(drop.name)).height
        assert read == raw_files + quarantined
        assert reconcile(ws, drop.name, STAGES, read_count=read) == []


def test_ledger_export_has_one_row_per_input_record(project):
    root, _, _ = project
    out = root / "ledger.parquet"
    code, output = run_cli("ledger", "export", str(out), "--workspace", str(root / "data"),
                           "--config", CONFIG)
    assert code == 0, output
    table = pl.read_parquet(out)
    ws = Workspace(root / "data")
    total_read = sum(stage_counts(ws, d.name, STAGES).row(0, named=True)["input"] for d in ws.drops())
    assert table.height == total_read == table["doc_id"].n_unique()
    assert set(table["status"]) <= {"kept", "dropped", "quarantined"}
    removed = table.filter(pl.col("status") != "kept")
    assert removed["stage"].null_count() == 0 and removed["rule"].null_count() == 0
    # Every duplicate points at a document that exists.
    dups = table.filter(pl.col("duplicate_of").is_not_null())
    assert dups.height > 0
    assert dups["duplicate_of"].is_in(table["doc_id"].implode()).all()
    # Every released document is kept; every kept document is either released or dropped by the release.
    released = table.filter(pl.col("release_shard").is_not_null())
    assert released.height > 0 and (released["status"] == "kept").all()
    # The malformed records of the samples are quarantined with their file and line.
    quarantined = table.filter(pl.col("status") == "quarantined")
    assert quarantined.height > 0 and quarantined["file"].null_count() == 0
    for column in ["source_id", "drop", "source", "license", "language", "language_score", "quality_score"]:
        assert column in table.columns


def test_release_has_shards_data_card_and_dvc_version(project):
    root, _, _ = project
    release = root / "data" / "releases" / "latest"
    shards = pl.read_parquet(str(release / "shards" / "*.parquet"))
    for column in ["doc_id", "source_id", "drop", "source", "license", "kind", "language", "text"]:
        assert column in shards.columns
    assert shards["doc_id"].n_unique() == shards.height
    card = json.loads((release / "data_card.json").read_text())
    assert card["documents"] == shards.height and card["tokens"] > 0
    assert {l["license"] for l in card["licenses"]} == set(shards["license"])
    assert "# Data card" in (release / "data_card.md").read_text()
    # Commercial profile: no non-commercial document is released.
    assert not shards["license"].str.contains("NC").any()
    # The planted duplicates are removed by the release: no two released texts are exact or near copies.
    texts = shards["text"].str.replace_all(r"\s+", " ").str.strip_chars().to_list()
    assert len(set(texts)) == len(texts)
    grams = [{tuple(w[i:i + 5]) for i in range(len(w) - 4)}
             for w in (re.sub(r"[^\w\s]", "", t.lower()).split() for t in texts)]
    assert all(len(a & b) < 0.8 * len(a | b) for a, b in itertools.combinations(grams, 2) if a and b)
    ledger = pl.read_parquet(root / "data" / "ledger" / "release" / "latest.parquet")
    removed = ledger.filter(pl.col("rule").is_in(["dedup.exact", "dedup.near"]))
    assert removed.height >= 8 and removed["duplicate_of"].is_in(shards["doc_id"].implode()).all()
    dvc_file = yaml.safe_load((root / "data" / "releases" / "latest.dvc").read_text())
    assert dvc_file["meta"]["documents"] == shards.height
    assert dvc_file["meta"]["licenses"] == card["licenses"]
    remote = root / "data" / "dvc-remote"
    assert any(p.name.endswith(".dir") for p in remote.rglob("*"))


def test_card_and_profiles_of_the_sample_run_reconcile_with_the_ledger(project):
    from tests.test_card import assert_card_reconciles

    root, _, _ = project
    ws = Workspace(root / "data")
    assert_card_reconciles(ws, root / "data" / "releases" / "latest")
    for drop in ws.drops():  # every curated drop has its profile, with the kept count of its final stage
        profile = json.loads((root / "data" / "profiles" / drop.name / "profile.json").read_text())
        assert profile["documents"] == stage_counts(ws, drop.name, STAGES)["kept"][-1]


def test_second_run_is_incremental_and_byte_identical(project):
    root, _, _ = project
    release = root / "data" / "releases" / "latest" / "shards"
    before = {p.name: p.read_bytes() for p in release.glob("*.parquet")}
    code, output = run_cli("run", "--landing", str(root / "landing"), "--workspace", str(root / "data"),
                           "--config", CONFIG)
    assert code == 0, output
    assert "0 to curate" in output
    after = {p.name: p.read_bytes() for p in release.glob("*.parquet")}
    assert before == after


def test_a_run_with_nothing_to_do_imports_neither_dagster_nor_great_expectations_nor_dvc(project):
    """Small drops are cheap: `curate run` decides there is nothing to do before it imports the orchestration."""
    import os
    import subprocess
    import sys

    root, _, _ = project
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    script = ("import sys\nfrom curation_platform.cli import main\ntry:\n    main()\nfinally:\n"
              "    print('imported:', sorted(m for m in ('dagster', 'great_expectations', 'dvc', 'ray') "
              "if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", script, "run", "--landing", str(root / "landing"), "--workspace",
                           str(root / "data"), "--config", CONFIG], capture_output=True, text=True, cwd=root, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "0 to curate" in proc.stdout and "release latest: unchanged" in proc.stdout
    assert "imported: []" in proc.stdout


def test_explain_tells_why_a_document_was_dropped(project):
    root, _, _ = project
    table = pl.read_parquet(root / "ledger.parquet") if (root / "ledger.parquet").exists() else None
    if table is None:
        run_cli("ledger", "export", str(root / "ledger.parquet"), "--workspace", str(root / "data"),
                "--config", CONFIG)
        table = pl.read_parquet(root / "ledger.parquet")
    dup = table.filter(pl.col("duplicate_of").is_not_null()).row(0, named=True)
    code, output = run_cli("explain", dup["doc_id"], "--workspace", str(root / "data"),
                           "--config", CONFIG)
    assert code == 0
    assert dup["rule"] in output and f"duplicate of {dup['duplicate_of']}" in output
    assert dup["source"] in output and "not in any release" in output


def test_explain_reads_only_the_records_it_names_and_finds_them_all(project):
    # `curate explain` filters the identity columns in the Parquet scans (read and quarantined records alike)
    # instead of loading every record of the history; it finds the same rows the full read has.
    from curation_platform.explain import _records

    root, _, _ = project
    ws = Workspace(root / "data")
    everything = _records(ws)
    quarantined = pl.concat([pl.read_parquet(f) for f in sorted((ws.lake / "quarantine").glob("*.parquet"))])
    wanted = [quarantined["doc_id"][0], everything.filter(~pl.col("doc_id").is_in(quarantined["doc_id"].implode()))[
        "doc_id"][0], "not-a-document"]
    some = _records(ws, wanted)
    assert some.height == 2 and set(some["doc_id"]) == set(wanted[:2])
    assert some.sort("doc_id").equals(everything.filter(pl.col("doc_id").is_in(wanted)).sort("doc_id"))


def test_a_failing_gate_stops_the_graph_with_a_clear_message(tmp_path):
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    # One small drop with planted duplicates and low-quality pages (the graph and its gates are the same for the
    # seven sample drops, which took a whole sample run here).
    docs = synthetic_corpus(20, seed=3, dup_rate=0.15, near_dup_rate=0.1, low_quality_rate=0.2)
    write_corpus_drop(tmp_path / "landing", "2026-01-web", docs.select("id", "text"), source="web")
    config = tmp_path / "strict.yaml"
    # No stage may remove anything: the first stage that drops a document must stop its drop.
    strict = yaml.safe_load((REPO / "curation.yaml").read_text())
    strict["gates"]["max_removal_rate"] = {s: 0.0 for s in STAGES}
    config.write_text(yaml.safe_dump(strict))
    code, output = run_cli("run", "--landing", str(tmp_path / "landing"), "--workspace", str(tmp_path / "data"),
                           "--config", str(config))
    assert code != 0
    assert "gate" in output and "removal_rate" in output
    assert "blocking asset check" not in output  # the gate's own line says it; no second line for its step
    assert not (tmp_path / "data" / "releases" / "latest").exists()


def test_rerun_after_a_crash_resumes_the_interrupted_drop(project):
    root, _, _ = project
    ws = Workspace(root / "data")
    drop = ws.drops()[1].name
    before = {p.name: p.read_bytes() for p in (root / "data" / "releases" / "latest" / "shards").glob("*.parquet")}
    # A crash after `exact_deduped`: the later stages of this drop never wrote their files.
    for stage in STAGES[STAGES.index("near_deduped"):]:
        ws.stage_path(stage, drop).unlink()
        ws.ledger_path(stage, drop).unlink()
    code, output = run_cli("run", "--landing", str(root / "landing"), "--workspace", str(root / "data"),
                           "--config", CONFIG)
    assert code == 0, output
    assert "1 to curate" in output
    assert reconcile(ws, drop, STAGES) == []
    after = {p.name: p.read_bytes() for p in (root / "data" / "releases" / "latest" / "shards").glob("*.parquet")}
    assert before == after


def test_status_lists_drops_and_the_versioned_release(project):
    root, _, _ = project
    code, output = run_cli("status", "--workspace", str(root / "data"), "--config", CONFIG)
    assert code == 0
    ws = Workspace(root / "data")
    for drop in ws.drops():
        assert drop.name in output
    assert "release latest:" in output and "versioned by DVC" in output
