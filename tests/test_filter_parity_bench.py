"""The parity script's comparison, without DataTrove: oracle verdicts written by hand for two documents."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import polars as pl

_SPEC = importlib.util.spec_from_file_location(
    "filter_parity", Path(__file__).resolve().parent.parent / "bench" / "filter_parity.py"
)
filter_parity = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(filter_parity)

DOCS = pl.DataFrame({
    "doc_id": ["a", "b"], "source_id": ["long", "short"], "kind": ["web", "web"],
    "text": [" ".join(f"word{i} of the list, with care." for i in range(60)), "Too short."],
})


def test_agreement_per_family_and_the_disagreeing_rule():
    ours, _ = filter_parity.our_verdicts(DOCS)
    assert ours.row(1, named=True)["gopher_quality"] == "gopher_quality.min_words"
    same = [{f: ("keep" if row[f] == "keep" else "drop") for f in filter_parity.FAMILIES}
            for row in ours.iter_rows(named=True)]
    report = filter_parity.compare("tiny", DOCS, same, examples=1)
    assert all(r["agreement"] == 1.0 for r in report["families"].values())
    # An oracle that keeps the short document disagrees on it, and the report names our rule.
    kept = [same[0], {**same[1], "gopher_quality": "keep"}]
    family = filter_parity.compare("tiny", DOCS, kept, examples=1)["families"]["gopher_quality"]
    assert family["agreement"] == 0.5
    assert family["top_disagreements"] == {"ours:gopher_quality.min_words": 1}
    assert family["examples"][0]["source_id"] == "short"
