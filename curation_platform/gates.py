"""Quality gates: Great Expectations suites over the columns a gate checks (never the text).

GX 1.x has no DuckDB or Polars data source, so each gate loads only its checked columns (or per-document
aggregates computed with Polars/DuckDB) into pandas and validates every row. ``GateResult`` carries what the UI
and the CLI show when a gate fails: the failing expectation and its counts.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
import types
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import polars as pl

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


@dataclass
class GateResult:
    name: str
    passed: bool
    failures: list[str] = field(default_factory=list)
    checked: dict[str, Any] = field(default_factory=dict)

    @property
    def description(self) -> str:
        return "passed" if self.passed else "; ".join(self.failures)


# Modules GX imports at start-up for features no gate uses: scipy.stats (the KL-divergence and KS-test
# expectations), altair (Vega-Lite renderings of results) and boto3 (S3 stores of a file context). Deferred to their
# first use, they take GX's import from about 3.5 s to about 2.2 s of every process that runs a gate.
_DEFERRED = ("scipy.stats", "altair", "boto3")


class _Deferred(types.ModuleType):
    """Stands in for an installed module until an attribute of it is first read; then imports it and forwards, so
    code that holds the stand-in sees the real module."""

    def __getattr__(self, attr: str) -> Any:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        module = importlib.import_module(self.__name__)
        self.__dict__.update(module.__dict__)
        return getattr(module, attr)


@functools.lru_cache(maxsize=1)
def great_expectations() -> types.ModuleType:
    """The ``great_expectations`` module, imported with ``_DEFERRED`` standing in for modules not yet imported."""
    for name in _DEFERRED:
        if name not in sys.modules and (spec := importlib.util.find_spec(name)) is not None:
            stand_in = _Deferred(name)
            stand_in.__spec__ = spec
            sys.modules[name] = stand_in
    import great_expectations as gx

    return gx


@functools.lru_cache(maxsize=1)
def _context():
    """One ephemeral GX context per process (its creation and GX's import are the slow part of a gate)."""
    gx = great_expectations()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("curation")
    return context, source


@functools.lru_cache(maxsize=1)
def _batch_definition():
    """One in-memory dataframe asset for every gate: the frame is a batch parameter, so no gate adds or deletes
    assets (each of those rewrites the context's configuration)."""
    _, source = _context()
    return source.add_dataframe_asset("frames").add_batch_definition_whole_dataframe("all")


def _summarize(result) -> str:
    config = result.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id",)}
    stats = result.result or {}
    counts = {k: stats[k] for k in ("element_count", "unexpected_count", "observed_value") if k in stats}
    sample = stats.get("partial_unexpected_list")
    text = f"{config.type}({', '.join(f'{k}={v}' for k, v in kwargs.items())}) failed: {counts}"
    if sample:
        text += f"; e.g. {sample[:3]}"
    return text


def validate(name: str, frame: pl.DataFrame | pd.DataFrame, expectations: list) -> GateResult:
    """Run a GX suite over a (small, checked-columns-only) frame; every row is validated."""
    gx = great_expectations()

    data = frame.to_pandas() if isinstance(frame, pl.DataFrame) else frame
    suite = gx.ExpectationSuite(name=name, expectations=list(expectations))
    # BASIC still reports counts and a sample of unexpected values, with fewer metrics to compute than SUMMARY.
    outcome = _batch_definition().get_batch(batch_parameters={"dataframe": data}).validate(suite, result_format="BASIC")
    failures = [_summarize(r) for r in outcome.results if not r.success]
    return GateResult(name=name, passed=bool(outcome.success), failures=failures,
                      checked={"rows": len(data), "expectations": len(expectations)})


def identity_expectations(required_columns: list[str]) -> list:
    """Schema and id checks shared by every stage: required columns present, doc_id non-null and unique."""
    gx = great_expectations()

    return [
        # One table-level expectation for the schema: each expectation costs a GX metric graph per validation.
        gx.expectations.ExpectTableColumnsToMatchSet(column_set=list(required_columns), exact_match=False),
        gx.expectations.ExpectColumnValuesToNotBeNull(column="doc_id"),
        gx.expectations.ExpectColumnValuesToBeUnique(column="doc_id"),
        gx.expectations.ExpectColumnValuesToNotBeNull(column="source"),
        gx.expectations.ExpectColumnValuesToNotBeNull(column="license"),
    ]


def counts_expectations(max_removal_rate: float) -> list:
    """Reconciliation (input = kept + dropped + quarantined; input = upstream kept) and the removal bound, over a
    one-row frame of counts."""
    gx = great_expectations()

    return [
        gx.expectations.ExpectColumnPairValuesToBeEqual(column_A="input", column_B="accounted"),
        gx.expectations.ExpectColumnPairValuesToBeEqual(column_A="input", column_B="upstream_kept"),
        gx.expectations.ExpectColumnValuesToBeBetween(column="removal_rate", min_value=0.0, max_value=max_removal_rate),
    ]


def max_value_expectation(column: str, max_value: float) -> Any:
    return great_expectations().expectations.ExpectColumnValuesToBeBetween(column=column, max_value=max_value)
