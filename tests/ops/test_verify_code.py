"""Generated code with tests through the real stages (ingest to ``filtered``): passing code stays, failing code
leaves with its rule and the runner's output in the ledger, and nothing else is run."""

from __future__ import annotations

import polars as pl

from curation_platform.advice import filtered_gate_advice
from curation_platform.config import CurationConfig
from curation_platform.ops.verify_code import VerificationConfig, verification_summary, verify_code
from curation_platform.ledger import ledger_rows
from curation_platform.ops.normalize import normalize
from curation_platform.ops.quality_signals import quality_signals
from curation_platform.pipeline import _filter_and_verify, filter_profile
from curation_platform.readers import IngestConfig, read_drop
from curation_platform.sandbox import SandboxConfig
from curation_platform.workspace import Workspace, write_parquet_atomic
from tests.test_readers import jsonl, make_drop

GENERATOR = {"model": "small-coder", "terms": "apache-2.0"}
SANDBOX = SandboxConfig(timeout_seconds=5, cpu_seconds=1, memory_mb=256, workers=2)

SOLUTION = '''def running_total(values):
    """Cumulative sums of a list of numbers."""
    total, out = 0, []
    for value in values:
        total += value
        out.append(total)
    return out
'''
OFF_BY_ONE = SOLUTION.replace("out.append(total)", "out.append(total - value)")
LOOPING = SOLUTION.replace("    return out\n", "    while True:\n        pass\n")
TESTS = "assert running_total([1, 2, 3]) == [1, 3, 6], running_total([1, 2, 3])\nassert running_total([]) == []\n"


def _records():
    return [
        {"id": "good", "text": SOLUTION, "tests": TESTS},
        {"id": "wrong", "text": OFF_BY_ONE, "tests": TESTS},
        {"id": "loops", "text": LOOPING, "tests": TESTS},
        {"id": "no-tests", "text": OFF_BY_ONE},
        # Tests as a list of statements (MBPP's shape) are joined into one test file.
        {"id": "listed", "text": SOLUTION,
         "tests": ["assert running_total([5]) == [5]", "assert running_total([1, 1]) == [1, 2]"]},
    ]


def test_generated_code_is_verified_in_the_filtered_stage(tmp_path):
    drop = make_drop(tmp_path / "landing", {"solutions.jsonl": jsonl(*_records())}, name="gen-code",
                     kind="code", license="MIT", generator=GENERATOR, id_field="id")
    ws = Workspace(tmp_path / "ws")
    ws.register_drop("gen-code", drop)
    cfg = CurationConfig(verification=VerificationConfig(sandbox=SANDBOX))
    # The real operators of the stages before (the language stage only labels code), then the filtered stage's.
    docs = read_drop(drop, cfg.ingest).records
    docs = normalize(docs, cfg.normalize).kept.with_columns(language=pl.col("code_language"))
    docs = quality_signals(docs, cfg.signals).kept
    result = _filter_and_verify(docs, cfg, filter_profile(ws, cfg, "gen-code"))
    assert result.metrics["verification_run"] == 4 and result.metrics["verification_passed"] == 2
    assert sorted(result.kept["source_id"].to_list()) == ["good", "listed", "no-tests"]
    rows = {(r["source_id"], r["rule"]): r for r in
            result.verdicts.join(docs.select("doc_id", "source_id"), on="doc_id").iter_rows(named=True)}
    assert set(rows) == {("good", "verification.passed"), ("listed", "verification.passed"),
                         ("wrong", "verification.failed"), ("loops", "verification.timeout")}
    assert "AssertionError: [0, 1, 3]" in rows[("wrong", "verification.failed")]["detail"]
    assert rows[("loops", "verification.timeout")]["verdict"] == "drop"
    assert rows[("good", "verification.passed")]["verdict"] == "flag"
    # The ledger keeps one deciding row per document: the stage's keep rows plus these drops reconcile.
    ledger = ledger_rows(stage="filtered", drop="gen-code", input_ids=docs["doc_id"], verdicts=result.verdicts,
                         run_id="t", config_hash=cfg.drop_stages_hash)
    deciding = ledger.filter(pl.col("verdict").is_in(["keep", "drop", "quarantine"]))
    assert deciding.height == docs.height and deciding["doc_id"].n_unique() == docs.height
    # The card's verification counts come from the written ledger.
    write_parquet_atomic(ledger, ws.ledger_path("filtered", "gen-code"))
    assert verification_summary(ws, ["gen-code"]) == {"tests_run": 4, "passed": 2, "failed": 1, "timeout": 1,
                                                      "resource": 0, "unsupported_language": 0}
    # When the filtered gate stops the drop, its advice names the verification rules too.
    write_parquet_atomic(docs, ws.stage_path("quality_signals", "gen-code"))
    advice = filtered_gate_advice(ws, cfg, "gen-code", None)
    assert "verification.failed removed 1" in advice and "verification.timeout removed 1" in advice


def test_non_synthetic_code_and_records_without_tests_are_not_run(tmp_path):
    records = _records()
    human = make_drop(tmp_path, {"a.jsonl": jsonl(*records)}, name="human", kind="code", license="MIT")
    docs = read_drop(human, IngestConfig()).records
    assert docs["tests"].null_count() == 1  # the tests column is read for every record that has one
    result = verify_code(docs, VerificationConfig(sandbox=SANDBOX))
    assert result.metrics["verification_run"] == 0
    assert result.kept.height == len(records) and result.verdicts.is_empty()


def test_tests_in_another_language_are_flagged_not_run(tmp_path):
    drop = make_drop(tmp_path, {"a.jsonl": jsonl({"id": "js", "text": "const f = () => 1;", "tests": "f() === 1"})},
                     name="js", kind="synthetic", license="MIT", generator=GENERATOR)
    docs = read_drop(drop, IngestConfig()).records.with_columns(pl.lit("javascript").alias("code_language"))
    result = verify_code(docs, VerificationConfig(sandbox=SANDBOX))
    assert result.kept.height == 1 and result.metrics["verification_run"] == 0
    assert result.verdicts["rule"].to_list() == ["verification.unsupported_language"]
