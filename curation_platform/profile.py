"""Per-drop profile: what a curated drop looks like, computed with Polars expressions over its final stage and ledger.

A profile holds distributions (characters, tokens, quality score, key quality signals; quantiles, never the
documents), the language and kind mix by documents and tokens, removals per stage and rule from the ledger, the most
frequent lines, outliers with examples (longest, shortest, lowest score) and, for chat, prompts that got
conflicting responses. It is written as ``profiles/<drop>/profile.json`` plus PNG plots beside it, and shown on the
final per-drop asset in the Dagster UI.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from curation_platform.ledger import read_ledger
from curation_platform.workspace import Workspace, write_bytes_atomic, write_text_atomic

if TYPE_CHECKING:
    from curation_platform.formatting import FormattingConfig

# Quality signals worth a glance per drop (Gopher, FineWeb and code heuristics); absent columns are skipped.
KEY_SIGNALS = [
    "language_score", "word_count", "mean_word_length", "alpha_word_frac", "stop_word_count", "dup_line_frac",
    "top_2gram_char_frac", "line_punct_ratio", "flagged_word_ratio", "code_alnum_frac", "code_max_line_length",
]
QUANTILES = {"p10": 0.1, "p50": 0.5, "p90": 0.9}
SNIPPET_CHARS = 160
PLOTS = ("characters", "tokens", "quality_score", "languages", "removals")


@dataclass
class DropProfile:
    data: dict[str, Any]  # JSON-ready numbers, tables and examples
    plots: dict[str, bytes]  # name -> PNG


def profile_dir(ws: Workspace, drop: str) -> Path:
    return ws.root / "profiles" / drop


def _summary(frame: pl.DataFrame, columns: list[str]) -> dict[str, dict[str, float | None]]:
    """min, p10, p50, p90, max and mean of each column, in one Polars pass."""
    if frame.is_empty() or not columns:
        return {c: {} for c in columns}
    exprs = []
    for c in columns:
        x = pl.col(c).cast(pl.Float64).fill_nan(None)
        exprs += [x.min().alias(f"{c}|min"), *(x.quantile(q, "linear").alias(f"{c}|{n}") for n, q in QUANTILES.items()),
                  x.max().alias(f"{c}|max"), x.mean().alias(f"{c}|mean"), x.count().alias(f"{c}|count")]
    row = frame.select(exprs).row(0, named=True)
    out: dict[str, dict[str, float | None]] = {c: {} for c in columns}
    for key, value in row.items():
        column, stat = key.split("|")
        out[column][stat] = None if value is None else round(float(value), 4)
    return out


def _snippet(column: str = "text") -> pl.Expr:
    text = pl.col(column).fill_null("").str.replace_all(r"\s+", " ")
    return (pl.when(text.str.len_chars() > SNIPPET_CHARS)
            .then(text.str.slice(0, SNIPPET_CHARS - 1) + pl.lit("…")).otherwise(text).alias("snippet"))


def _examples(docs: pl.DataFrame, by: str, descending: bool, n: int) -> list[dict[str, Any]]:
    ranked = docs.filter(pl.col(by).is_not_null()).sort([by, "doc_id"], descending=[descending, False]).head(n)
    return ranked.select("doc_id", "kind", "characters", "tokens", "quality_score", _snippet()).to_dicts()


def frequent_lines(docs: pl.DataFrame, n: int = 10) -> list[dict[str, Any]]:
    """The ``n`` stripped non-empty lines found in the most documents (boilerplate that survived curation shows
    up here), with their document and occurrence counts."""
    lines = (
        docs.select("doc_id", pl.col("text").fill_null("").str.split("\n").alias("line"))
        .explode("line")
        .with_columns(pl.col("line").str.strip_chars())
        .filter(pl.col("line").str.len_chars() > 0)
    )
    top = (lines.group_by("line").agg(pl.col("doc_id").n_unique().alias("documents"), pl.len().alias("occurrences"))
           .filter(pl.col("documents") > 1)
           .sort(["documents", "occurrences", "line"], descending=[True, True, False]).head(n))
    return top.select(_snippet("line").alias("line"), "documents", "occurrences").to_dicts()


def conflicting_chat(docs: pl.DataFrame, n: int = 5) -> dict[str, Any]:
    """Chat prompts (first user turn, case and whitespace normalized) answered differently (first assistant turn)
    by different records of the drop: the number of such prompts, the records involved, and examples."""
    if "messages" not in docs.columns or docs.filter(pl.col("kind") == "chat").is_empty():
        return {"prompts": 0, "documents": 0, "examples": []}
    turns = pl.col("messages")
    pairs = docs.filter(pl.col("kind") == "chat").select(
        "doc_id",
        turns.list.eval(pl.element().filter(pl.element().struct.field("role") == "user")
                        .struct.field("content")).list.first().alias("prompt"),
        turns.list.eval(pl.element().filter(pl.element().struct.field("role") == "assistant")
                        .struct.field("content")).list.first().str.strip_chars().alias("response"),
    ).filter(pl.col("prompt").is_not_null() & pl.col("response").is_not_null())
    pairs = pairs.with_columns(
        pl.col("prompt").str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars().alias("_key"))
    conflicts = (pairs.group_by("_key").agg(
        pl.col("prompt").first(), pl.col("response").unique().sort().alias("responses"),
        pl.col("doc_id").sort().alias("doc_ids"))
        .filter(pl.col("responses").list.len() > 1).sort("_key"))
    examples = conflicts.head(n).select(
        _snippet("prompt").alias("prompt"),
        pl.col("responses").list.head(3).list.eval(pl.element().str.slice(0, SNIPPET_CHARS)),
        pl.col("doc_ids").list.head(5))
    return {"prompts": conflicts.height, "documents": int(conflicts["doc_ids"].list.len().sum() or 0),
            "examples": examples.to_dicts()}


def _removals(ledger: pl.DataFrame, stages: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per stage (documents in, kept, dropped, quarantined) and per stage and rule, from the ledger's deciding rows."""
    deciding = ledger.filter(pl.col("verdict").is_in(["keep", "drop", "quarantine"]))
    per_stage = deciding.group_by("stage").agg(
        pl.len().alias("input"), (pl.col("verdict") == "keep").sum().alias("kept"),
        (pl.col("verdict") == "drop").sum().alias("dropped"),
        (pl.col("verdict") == "quarantine").sum().alias("quarantined"))
    order = pl.DataFrame({"stage": stages, "_pos": list(range(len(stages)))})
    per_stage = order.join(per_stage, on="stage", how="inner").sort("_pos").drop("_pos")
    per_rule = (deciding.filter(pl.col("verdict") != "keep").group_by("stage", "rule").len("documents")
                .join(order, on="stage", how="left").sort("_pos", "rule").drop("_pos"))
    return per_stage.to_dicts(), per_rule.to_dicts()


def _mix(docs: pl.DataFrame, column: str) -> list[dict[str, Any]]:
    if docs.is_empty():
        return []
    return (docs.group_by(pl.col(column).fill_null("unknown"))
            .agg(pl.len().alias("documents"), pl.col("tokens").sum().alias("tokens"))
            .sort(["documents", column], descending=[True, False]).to_dicts())


def profile_drop(docs: pl.DataFrame, ledger: pl.DataFrame, stages: list[str], drop: str,
                 plots: bool = True) -> DropProfile:
    """The profile of one drop. ``docs``: its final-stage documents with ``token_count``; ``ledger``: its per-drop
    ledger rows (every stage). ``plots=False`` skips rendering (no matplotlib import)."""
    docs = docs.with_columns(
        pl.col("text").fill_null("").str.len_chars().cast(pl.Int64).alias("characters"),
        pl.col("token_count").cast(pl.Int64).alias("tokens"),
        *([] if "quality_score" in docs.columns else [pl.lit(None, dtype=pl.Float64).alias("quality_score")]),
        *([] if "language" in docs.columns else [pl.lit(None, dtype=pl.String).alias("language")]),
    )
    # Signals that no document of the drop has (code signals on a chat drop) are left out.
    signals = [c for c in KEY_SIGNALS if c in docs.columns and docs[c].null_count() < docs.height]
    per_stage, per_rule = _removals(ledger, stages)
    data = {
        "drop": drop,
        "documents": docs.height,
        "characters": int(docs["characters"].sum()) if docs.height else 0,
        "tokens": int(docs["tokens"].sum()) if docs.height else 0,
        "input": per_stage[0]["input"] if per_stage else docs.height,
        "distributions": _summary(docs, ["characters", "tokens", "quality_score"]),
        "signals": _summary(docs, signals),
        "by_language": _mix(docs, "language"),
        "by_kind": _mix(docs, "kind"),
        "stages": per_stage,
        "removals": per_rule,
        "frequent_lines": frequent_lines(docs),
        "outliers": {
            "longest": _examples(docs, "characters", True, 3),
            "shortest": _examples(docs, "characters", False, 3),
            "lowest_score": _examples(docs, "quality_score", False, 3),
        },
        "chat_conflicts": conflicting_chat(docs),
    }
    return DropProfile(data=data, plots=_profile_plots(docs, data) if plots else {})


def _profile_plots(docs: pl.DataFrame, data: dict[str, Any]) -> dict[str, bytes]:
    from curation_platform import plots

    def by_kind(column: str) -> dict[str, list]:
        return {k: g[column].to_list() for (k,), g in docs.sort("kind").group_by("kind", maintain_order=True)}

    stages = data["stages"]
    return {
        "characters": plots.histogram(by_kind("characters"), "Characters per document", "characters (log scale)",
                                      log_x=True),
        "tokens": plots.histogram(by_kind("tokens"), "Tokens per document", "tokens (log scale)", log_x=True),
        "quality_score": plots.histogram(by_kind("quality_score"), "Quality score", "quality_score"),
        "languages": plots.bars([r["language"] for r in data["by_language"]],
                                {"documents": [r["documents"] for r in data["by_language"]]},
                                "Languages", "documents"),
        "removals": plots.bars([s["stage"] for s in stages],
                               {"dropped": [s["dropped"] for s in stages],
                                "quarantined": [s["quarantined"] for s in stages]},
                               "Removed per stage", "documents"),
    }


def _cell(value: Any) -> str:
    if isinstance(value, float):
        value = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return ("" if value is None else str(value)).replace("|", "\\|").replace("\n", " ")


def _table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
            *("| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows)]


def profile_markdown(data: dict[str, Any], images: dict[str, str]) -> str:
    """The profile as Markdown; ``images`` maps plot names to URLs (``data:`` URIs for the Dagster UI, or file
    names beside profile.json)."""
    d = data["distributions"]
    lines = [f"# Profile of drop {data['drop']}", "",
             (f"**{data['documents']:,}** documents kept of {data['input']:,} read, {data['tokens']:,} tokens, "
              f"{data['characters']:,} characters."), ""]
    lines += _table([{"measure": k, **v} for k, v in d.items()] + [{"measure": k, **v} for k, v in
                                                                    data["signals"].items()],
                    ["measure", "min", "p10", "p50", "p90", "max", "mean"])
    lines += [""] + [f"![{name}]({images[name]})" for name in PLOTS if name in images]
    lines += ["", "## Languages and kinds", ""] + _table(data["by_language"], ["language", "documents", "tokens"])
    lines += [""] + _table(data["by_kind"], ["kind", "documents", "tokens"])
    lines += ["", "## Removals by stage and rule", ""] + _table(data["removals"], ["stage", "rule", "documents"])
    lines += ["", "## Most frequent lines", ""]
    lines += _table(data["frequent_lines"], ["line", "documents", "occurrences"]) if data["frequent_lines"] else [
        "_no line occurs in more than one document_"]
    for title, key in (("Longest", "longest"), ("Shortest", "shortest"), ("Lowest quality score", "lowest_score")):
        lines += ["", f"## {title}", ""] + _table(data["outliers"][key],
                                                 ["doc_id", "kind", "characters", "tokens", "quality_score", "snippet"])
    chat = data["chat_conflicts"]
    if chat["prompts"]:
        lines += ["", "## Chat prompts with conflicting responses", "",
                  f"{chat['prompts']} prompt(s) answered differently by {chat['documents']} record(s).", ""]
        lines += _table([{**e, "responses": " / ".join(e["responses"]), "doc_ids": ", ".join(e["doc_ids"])}
                         for e in chat["examples"]], ["prompt", "responses", "doc_ids"])
    return "\n".join(lines) + "\n"


def write_drop_profile(ws: Workspace, final_stage: str, stages: list[str], drop: str, tokenizer: str,
                       formatting: FormattingConfig | None = None) -> DropProfile:
    """Profile a curated drop from its final stage, token counts and ledger, and write ``profile.json``,
    ``profile.md`` and one PNG per plot under ``profiles/<drop>/``. Tokens are counted as the release counts them
    (chat documents rendered with ``formatting``'s template), so the release reuses the drop's cached counts."""
    from curation_platform.release import _token_counts

    docs = ws.read_stage(final_stage, drop).join(
        _token_counts(ws, final_stage, drop, tokenizer, formatting), on="doc_id", how="left")
    profile = profile_drop(docs, read_ledger(ws, drop), stages, drop)
    folder = profile_dir(ws, drop)
    for name, png in profile.plots.items():
        write_bytes_atomic(png, folder / f"{name}.png")
    write_text_atomic(json.dumps(profile.data, indent=2, sort_keys=True, default=str) + "\n",
                      folder / "profile.json")
    write_text_atomic(profile_markdown(profile.data, {n: f"{n}.png" for n in profile.plots}), folder / "profile.md")
    return profile

