import polars as pl

from curation_platform.ledger import ledger_rows, reconcile, stage_counts
from curation_platform.records import verdict_frame
from curation_platform.workspace import Workspace, write_parquet_atomic

STAGES = ["raw_documents", "filtered"]


def _write(ws, stage, drop, ids, verdicts):
    rows = ledger_rows(stage=stage, drop=drop, input_ids=pl.Series(ids), verdicts=verdict_frame(verdicts),
                       run_id="r1", config_hash="c1")
    write_parquet_atomic(rows, ws.ledger_path(stage, drop))
    return rows


def test_ledger_rows_add_a_keep_row_for_every_surviving_document(tmp_path):
    rows = _write(Workspace(tmp_path), "filtered", "d1", ["a", "b", "c"],
                  pl.DataFrame({"doc_id": ["b"], "verdict": ["drop"], "rule": ["gopher_quality.min_words"]}))
    verdicts = dict(zip(rows["doc_id"], rows["verdict"]))
    assert verdicts == {"a": "keep", "b": "drop", "c": "keep"}
    assert set(rows["run_id"]) == {"r1"} and set(rows["config_hash"]) == {"c1"} and set(rows["drop"]) == {"d1"}


def test_reconcile_accepts_consistent_counts_and_reports_lost_documents(tmp_path):
    ws = Workspace(tmp_path)
    _write(ws, "raw_documents", "d1", ["a", "b", "c", "q"],
           pl.DataFrame({"doc_id": ["q"], "verdict": ["quarantine"], "rule": ["ingest.quarantined"]}))
    _write(ws, "filtered", "d1", ["a", "b", "c"],
           pl.DataFrame({"doc_id": ["b"], "verdict": ["drop"], "rule": ["x"]}))
    assert reconcile(ws, "d1", STAGES, read_count=4) == []
    counts = stage_counts(ws, "d1", STAGES).to_dicts()
    assert counts[0] | {} == {"stage": "raw_documents", "input": 4, "kept": 3, "dropped": 0, "quarantined": 1, "distinct_docs": 4}
    assert counts[1]["input"] == counts[1]["kept"] + counts[1]["dropped"] + counts[1]["quarantined"] == 3

    # A stage that silently loses a document no longer reconciles.
    _write(ws, "filtered", "d1", ["a", "b"], pl.DataFrame({"doc_id": ["b"], "verdict": ["drop"], "rule": ["x"]}))
    problems = reconcile(ws, "d1", STAGES, read_count=4)
    assert problems and "never reached" in problems[0]
    assert reconcile(ws, "d1", STAGES, read_count=5)[-1].startswith("d1: read 5 records")


def test_ledger_rows_follow_the_input_order_whatever_order_the_operator_gave():
    """An operator that sorts its verdicts (the rule applicator sorts by doc_id) gives, batch by batch, another
    order than on the whole drop; the ledger is the same either way."""
    ids = pl.Series("doc_id", ["d", "b", "a", "c"])
    whole = verdict_frame(pl.DataFrame({"doc_id": ["a", "c", "d", "d"], "verdict": ["drop", "drop", "redact", "drop"],
                                        "rule": ["r1", "r2", "pii.email", "r3"]}))
    # The same verdicts from two batches (d, b) and (a, c), each sorted on its own.
    batched = pl.concat([whole.filter(pl.col("doc_id") == "d"), whole.filter(pl.col("doc_id").is_in(["a", "c"]))])
    rows = [ledger_rows(stage="filtered", drop="x", input_ids=ids, verdicts=v, run_id="r", config_hash="h")
            for v in (whole, batched)]
    assert rows[0].equals(rows[1])
    assert rows[0].select("doc_id", "verdict").rows() == [
        ("d", "redact"), ("d", "drop"), ("a", "drop"), ("c", "drop"), ("b", "keep")]


def test_counts_come_from_a_cache_that_follows_every_rewrite_of_a_ledger(tmp_path, monkeypatch):
    # `curate run` and `curate status` look at every drop of the history each time: the counts and configuration
    # hashes of a drop's ledgers are read once per version of its files, and a rewritten ledger is read again.
    from curation_platform.ledger import all_stage_counts, rule_counts

    ws = Workspace(tmp_path)
    for drop in ("d1", "d2"):
        _write(ws, "raw_documents", drop, ["a", "b", "c", "q"],
               pl.DataFrame({"doc_id": ["q"], "verdict": ["quarantine"], "rule": ["ingest.quarantined"]}))
        _write(ws, "filtered", drop, ["a", "b", "c"], pl.DataFrame({"doc_id": ["b"], "verdict": ["drop"], "rule": ["x"]}))
    first = stage_counts(ws, "d1", STAGES)
    reads = []
    real = pl.read_parquet
    monkeypatch.setattr(pl, "read_parquet", lambda *a, **k: reads.append(a[0]) or real(*a, **k))
    assert stage_counts(ws, "d1", STAGES).equals(first)
    assert reads == []  # nothing read: the cache matched every file's size and modification time

    _write(ws, "filtered", "d1", ["a", "b", "c"],
           pl.DataFrame({"doc_id": ["b", "c"], "verdict": ["drop", "drop"], "rule": ["x", "y"]}))
    again = stage_counts(ws, "d1", STAGES).filter(pl.col("stage") == "filtered").to_dicts()[0]
    assert (again["kept"], again["dropped"]) == (1, 2) and len(reads) == 2  # d1's two ledgers, read again
    assert [r for r in all_stage_counts(ws, STAGES) if r["stage"] == "filtered"][0] == {
        "stage": "filtered", "input": 6, "kept": 3, "dropped": 3, "quarantined": 0}
    assert rule_counts(ws) == [{"stage": "filtered", "rule": "x", "documents": 2},
                               {"stage": "filtered", "rule": "y", "documents": 1},
                               {"stage": "raw_documents", "rule": "ingest.quarantined", "documents": 2}]
