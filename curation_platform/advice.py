"""Failed gates in the user's words: what removed the documents and what to run to keep them."""

from __future__ import annotations

import math

import polars as pl

from curation_platform.config import CurationConfig
from curation_platform.ledger import read_ledger
from curation_platform.rules import Rule, rule_failures
from curation_platform.workspace import Workspace


def _keeping_threshold(rule: Rule, values: pl.Series) -> float | None:
    """The threshold that would keep every document this rule drops (None for yes/no rules)."""
    values = values.drop_nulls()
    if values.is_empty() or rule.keep_if in ("==", "!="):
        return None
    # Rounded outwards to 4 decimals, so the printed value really keeps them.
    low, high = math.floor(float(values.min()) * 1e4) / 1e4, math.ceil(float(values.max()) * 1e4) / 1e4
    return round({">=": low, ">": low - 1e-4, "<=": high, "<": high + 1e-4}[rule.keep_if], 4)


def filtered_gate_advice(ws: Workspace, cfg: CurationConfig, drop: str, profile: str | None) -> str:
    """Why the ``filtered`` stage removed so much of ``drop``, per deciding rule, with the ``curate whatif``
    command that previews keeping those documents and how to give the source its own rule set."""
    ledger = read_ledger(ws, drop, stage="filtered")
    total = ledger.filter(pl.col("verdict").is_in(["keep", "drop"])).height
    deciding = ledger.filter(pl.col("verdict") == "drop").group_by("rule").len().sort(["len", "rule"],
                                                                                       descending=[True, False])
    if deciding.is_empty():
        return ""
    rules = {r.name: r for r in cfg.filters.rules(profile)}
    signals = ws.read_stage("quality_signals", drop)
    broken = rule_failures(signals, list(rules.values()))
    bound = cfg.gates.max_removal_rate.get("filtered", 1.0)
    removed = int(deciding["len"].sum())
    lines = [f"the quality filters removed {removed} of {total} documents of drop '{drop}' "
             f"({removed / max(total, 1):.0%}; at most {bound:.0%} may go, gates.max_removal_rate.filtered)"
             + (f" with filter profile '{profile}'" if profile else "") + ":"]
    settings, disable = [], []
    by_rule = {name: group["value"] for (name,), group in broken.group_by("rule", maintain_order=True)}
    for name, count in deciding.iter_rows():
        if name not in rules:  # generated code that failed its tests in the sandbox: no threshold to preview
            lines.append(f"  {name} removed {count} (generated code run against its tests; the runner's output is "
                         "in each ledger row: curate ledger export --verdicts)")
            continue
        rule = rules[name]
        values = by_rule[name]
        spread = f"{values.min():g}" + (f" to {values.max():g}" if values.max() != values.min() else "")
        lines.append(f"  {name} removed {count} ({rule.signal} {rule.broken_bound}; theirs: {spread})")
    for name, values in by_rule.items():
        threshold = _keeping_threshold(rules[name], values)
        if threshold is None:
            disable.append(name)
        else:
            settings.append(f"--set {name}={threshold:g}")
    if settings:
        lines.append(f"to see what would come back: curate whatif {' '.join(settings)}")
    if disable:
        lines.append(f"yes/no rules broken: {', '.join(disable)} (turn off with filters.disabled in curation.yaml)")
    source = signals["source"][0] if signals.height and "source" in signals.columns else drop
    others = [p for p in cfg.filters.profiles if p != profile]
    if others:
        lines.append(f"to give source '{source}' its own rule set (short documents, docs, ...): add "
                     f"`filter_profile: {others[0]}` to the drop's manifest.yaml, or `filters.sources: "
                     f"{{{source}: {others[0]}}}` to curation.yaml, then run `curate run` again (profiles in "
                     f"filters.profiles: {', '.join(sorted(cfg.filters.profiles))})")
    return "\n".join(lines)
