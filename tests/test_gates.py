import polars as pl

from curation_platform.gates import counts_expectations, identity_expectations, validate


def test_identity_gate_names_the_failing_expectations_and_counts():
    frame = pl.DataFrame({"doc_id": ["a", "a", "b"], "source": ["s"] * 3, "license": ["MIT", None, "MIT"]})
    result = validate("t", frame, identity_expectations(["doc_id", "source", "license"]))
    assert not result.passed
    text = " ".join(result.failures)
    assert "expect_column_values_to_be_unique(column=doc_id)" in text and "'unexpected_count': 2" in text
    assert "expect_column_values_to_not_be_null(column=license)" in text


def test_counts_gate_enforces_reconciliation_and_removal_bound():
    ok = pl.DataFrame({"input": [10], "accounted": [10], "upstream_kept": [10], "removal_rate": [0.3]})
    assert validate("ok", ok, counts_expectations(0.5)).passed
    lost = ok.with_columns(pl.lit(9).alias("accounted"))
    assert not validate("lost", lost, counts_expectations(0.5)).passed
    too_many = ok.with_columns(pl.lit(0.6).alias("removal_rate"))
    failed = validate("rate", too_many, counts_expectations(0.5))
    assert not failed.passed and "removal_rate" in failed.failures[0]


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
