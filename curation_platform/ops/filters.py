"""Heuristic quality filters as rules over the columns ``quality_signals`` computed.

Each rule set holds ``curation_platform.rules.Rule`` objects with the published thresholds; ``apply_rules`` turns
them into verdicts. Prose rules apply to web, text and synthetic documents; code and chat documents get their
own rules, so code is never judged by prose heuristics.

Deviation from C4 (Raffel et al. 2020): C4 deletes the lines it dislikes (no terminal punctuation, fewer than
three words, "javascript", cookie/terms phrases) and keeps the rest of the page. We keep text unchanged and
report the fraction of such lines as ``c4_removed_line_frac``; ``c4.removed_line_frac`` is offered as a page
rule but disabled by default because C4 publishes no page-level threshold for it.
"""

from __future__ import annotations

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from curation_platform.records import StageResult
from curation_platform.rules import Rule, apply_rules

PROSE_KINDS = ["web", "text", "synthetic"]
CODE_KINDS = ["code"]
CHAT_KINDS = ["chat"]

_GOPHER = "Rae et al. 2021 (Gopher), table A1; DataTrove GopherQualityFilter"
_GOPHER_REP = "Rae et al. 2021 (Gopher), table A1; DataTrove GopherRepetitionFilter"
_C4 = "Raffel et al. 2020 (C4); DataTrove C4QualityFilter"
_FINEWEB = "Penedo et al. 2024 (FineWeb); DataTrove FineWebQualityFilter"
_STARCODER = "Chen et al. 2021 (Codex) and Li et al. 2023 (StarCoder) file filters"
_CHAT = "curation_platform chat hygiene (no published reference)"
_FLAGGED = "C4 LDNOOBW page filter as a ratio (Raffel et al. 2020); BigScience ROOTS flagged-word ratio"


def _rule(name: str, signal: str, keep_if: str, threshold: float, kinds: list[str], reference: str,
          enabled: bool = True) -> Rule:
    return Rule(name=name, signal=signal, keep_if=keep_if, threshold=threshold, kinds=list(kinds),
                reference=reference, enabled=enabled)


def _gopher_quality() -> list[Rule]:
    k = PROSE_KINDS
    return [
        _rule("gopher_quality.min_words", "word_count", ">=", 50, k, _GOPHER),  # 50 to 100,000 words
        _rule("gopher_quality.max_words", "word_count", "<=", 100_000, k, _GOPHER),
        _rule("gopher_quality.min_mean_word_length", "mean_word_length", ">=", 3, k, _GOPHER),  # 3 to 10 chars
        _rule("gopher_quality.max_mean_word_length", "mean_word_length", "<=", 10, k, _GOPHER),
        _rule("gopher_quality.hash_to_word_ratio", "hash_to_word_ratio", "<=", 0.1, k, _GOPHER),  # symbol ratio 0.1
        _rule("gopher_quality.ellipsis_to_word_ratio", "ellipsis_to_word_ratio", "<=", 0.1, k, _GOPHER),
        _rule("gopher_quality.bullet_line_frac", "bullet_line_frac", "<=", 0.9, k, _GOPHER),  # 90% bullet lines
        _rule("gopher_quality.ellipsis_line_frac", "ellipsis_line_frac", "<=", 0.3, k, _GOPHER),  # 30% ellipsis
        _rule("gopher_quality.alpha_word_frac", "alpha_word_frac", ">=", 0.8, k, _GOPHER),  # 80% alphabetic words
        _rule("gopher_quality.min_stop_words", "distinct_stop_words", ">=", 2, k, _GOPHER),  # two distinct
    ]


def _gopher_repetition() -> list[Rule]:
    k = PROSE_KINDS
    # Order follows the reference: paragraphs, lines, top n-grams, duplicate n-grams.
    rules = [
        _rule("gopher_repetition.dup_para_frac", "dup_para_frac", "<=", 0.3, k, _GOPHER_REP),
        _rule("gopher_repetition.dup_para_char_frac", "dup_para_char_frac", "<=", 0.2, k, _GOPHER_REP),
        _rule("gopher_repetition.dup_line_frac", "dup_line_frac", "<=", 0.3, k, _GOPHER_REP),
        _rule("gopher_repetition.dup_line_char_frac", "dup_line_char_frac", "<=", 0.2, k, _GOPHER_REP),
    ]
    for n, threshold in ((2, 0.20), (3, 0.18), (4, 0.16)):  # Gopher table A1
        rules.append(_rule(f"gopher_repetition.top_{n}gram_char_frac", f"top_{n}gram_char_frac", "<=", threshold,
                           k, _GOPHER_REP))
    for n, threshold in ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)):  # Gopher table A1
        rules.append(_rule(f"gopher_repetition.dup_{n}gram_char_frac", f"dup_{n}gram_char_frac", "<=", threshold,
                           k, _GOPHER_REP))
    return rules


def _c4() -> list[Rule]:
    k = PROSE_KINDS
    return [
        _rule("c4.lorem_ipsum", "c4_lorem_ipsum", "==", 0, k, _C4),  # any "lorem ipsum" drops the page
        _rule("c4.curly_bracket", "c4_curly_bracket", "==", 0, k, _C4),  # any "{" drops the page
        _rule("c4.min_sentences", "c4_sentence_count", ">=", 5, k, _C4),  # at least 5 sentences in kept lines
        # Not in C4 (it deletes lines instead); our starting point, off by default.
        _rule("c4.removed_line_frac", "c4_removed_line_frac", "<=", 0.5, k, _C4 + "; page rule is ours",
              enabled=False),
    ]


def _fineweb() -> list[Rule]:
    k = PROSE_KINDS
    return [
        # FineWeb drops when the ratio is below 0.12 (DataTrove: ratio < line_punct_thr).
        _rule("fineweb.line_punct_ratio", "line_punct_ratio", ">=", 0.12, k, _FINEWEB),
        # FineWeb drops when more than 0.67 of non-blank lines have at most 30 characters.
        _rule("fineweb.short_line_ratio", "short_line_ratio", "<=", 0.67, k, _FINEWEB),
        # FineWeb drops when more than 1% of characters (newlines excluded) sit in repeated lines.
        _rule("fineweb.char_dup_ratio", "char_dup_ratio", "<=", 0.01, k, _FINEWEB),
        # FineWeb list_ratio: drops when newlines / words > 0.3.
        _rule("fineweb.newline_to_word_ratio", "newline_to_word_ratio", "<=", 0.3, k, _FINEWEB),
    ]


def _code() -> list[Rule]:
    k = CODE_KINDS
    return [
        _rule("code.max_line_length", "code_max_line_length", "<=", 1000, k, _STARCODER),  # longest line 1000
        _rule("code.mean_line_length", "code_mean_line_length", "<=", 100, k, _STARCODER),  # mean line 100
        _rule("code.alnum_frac", "code_alnum_frac", ">=", 0.25, k, _STARCODER),  # alphanumeric >= 25%
        _rule("code.autogenerated", "code_autogenerated", "==", 0, k, _STARCODER),  # generated-file header
        _rule("code.data_like", "code_data_like", "==", 0, k, _STARCODER),  # encoded data / number dumps
    ]


def _chat() -> list[Rule]:
    k = CHAT_KINDS
    return [
        _rule("chat.empty_response", "chat_empty_response", "==", 0, k, _CHAT),
        _rule("chat.repeated_turns", "chat_repeated_turns", "==", 0, k, _CHAT),
        # Off by default: several sampled answers to one prompt are often intended.
        _rule("chat.conflicting_response", "chat_conflicting_response", "==", 0, k, _CHAT, enabled=False),
        _rule("chat.min_response_chars", "chat_response_chars", ">=", 1, k, _CHAT),
    ]


def _flagged_words() -> list[Rule]:
    # flagged_word_limit_ratio is the flagged-word ratio over the limit for the document's source and language
    # (the `flagged_words` section), so one rule carries per-source and per-language thresholds.
    return [
        _rule("flagged_words.max_ratio", "flagged_word_limit_ratio", "<=", 1, PROSE_KINDS, _FLAGGED),
        # Needs `signals.flagged_words.classifier: true`; off by default (the classifier, like the lists, flags
        # LGBTQ self-references: audit its removals before relying on it).
        _rule("flagged_words.max_offensive_score", "offensive_score", "<=", 0.9, PROSE_KINDS,
              "alt-profanity-check offensive-language classifier (linear SVM on TF-IDF)", enabled=False),
    ]
class FilterProfile(BaseModel):
    """A named rule set for sources whose documents the default rules do not fit (short posts, docs pages):
    the same edits as ``filters`` itself, applied on top of them."""

    model_config = ConfigDict(extra="forbid")

    thresholds: dict[str, float] = Field(default_factory=dict)
    disabled: list[str] = Field(default_factory=list)
    enabled: list[str] = Field(default_factory=list)
    description: str = ""


def _default_profiles() -> dict[str, FilterProfile]:
    # Short documents (notes, posts, Q&A, captions): keep the content rules, drop the rules that assume a web
    # page (Gopher's 50 words and two stop words, C4's 5 sentences, FineWeb's short-line ratio, and the top n-gram
    # share, which any n-gram of a 20-word text exceeds).
    return {"short-form": FilterProfile(
        thresholds={"gopher_quality.min_words": 3, "gopher_quality.min_stop_words": 1, "c4.min_sentences": 1},
        disabled=["fineweb.short_line_ratio", "gopher_repetition.top_2gram_char_frac",
                  "gopher_repetition.top_3gram_char_frac", "gopher_repetition.top_4gram_char_frac"],
        description="short documents of one or a few sentences",
    )}


class FiltersConfig(BaseModel):
    """Rule sets with published default thresholds; edit thresholds, kinds or ``enabled`` per rule."""

    model_config = ConfigDict(extra="forbid")

    gopher_quality: list[Rule] = Field(default_factory=_gopher_quality)  # Rae et al. 2021
    gopher_repetition: list[Rule] = Field(default_factory=_gopher_repetition)  # Rae et al. 2021, table A1
    c4: list[Rule] = Field(default_factory=_c4)  # Raffel et al. 2020
    fineweb: list[Rule] = Field(default_factory=_fineweb)  # Penedo et al. 2024
    code: list[Rule] = Field(default_factory=_code)  # Codex / StarCoder
    chat: list[Rule] = Field(default_factory=_chat)  # ours
    flagged_words: list[Rule] = Field(default_factory=_flagged_words)  # limits per source/language: `flagged_words`
    # Short-hand edits by stable rule name, so curation.yaml need not repeat whole rule lists:
    # ``thresholds: {gopher_quality.min_words: 100}``, ``disabled: [c4.curly_bracket]``, ``enabled: [...]``.
    thresholds: dict[str, float] = Field(default_factory=dict)
    disabled: list[str] = Field(default_factory=list)
    enabled: list[str] = Field(default_factory=list)
    # Per-source rule sets: ``profiles: {short-form: {thresholds: {...}, disabled: [...]}}`` and which sources use
    # them, ``sources: {my-notes: short-form}`` (a drop's manifest may also say ``filter_profile: short-form``).
    profiles: dict[str, FilterProfile] = Field(default_factory=_default_profiles)
    sources: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_rule_names(self) -> "FiltersConfig":
        names = {r.name for r in self._all_rules()}
        edits = [self, *self.profiles.values()]
        used = set().union(*(set(e.thresholds) | set(e.disabled) | set(e.enabled) for e in edits))
        unknown = sorted(used - names)
        if unknown:
            raise ValueError(f"unknown rule name(s) {', '.join(unknown)}; rules are {', '.join(sorted(names))}")
        missing = sorted(set(self.sources.values()) - set(self.profiles))
        if missing:
            raise ValueError(f"sources name unknown profile(s) {', '.join(missing)}; profiles are "
                             f"{', '.join(sorted(self.profiles)) or 'none'}")
        return self

    def profile_for(self, source: str, manifest_profile: str | None = None) -> str | None:
        """The profile a source's documents are filtered with: the drop manifest's ``filter_profile``, else
        ``sources[source]``, else None (the default rules). Raises KeyError for a profile not defined here."""
        name = manifest_profile or self.sources.get(source)
        if name is not None and name not in self.profiles:
            raise KeyError(f"filter profile '{name}' is not defined; filters.profiles has "
                           f"{', '.join(sorted(self.profiles)) or 'none'}")
        return name

    def _all_rules(self) -> list[Rule]:
        return [*self.gopher_quality, *self.gopher_repetition, *self.c4, *self.fineweb, *self.code, *self.chat,
                *self.flagged_words]

    def rules(self, profile: str | None = None) -> list[Rule]:
        """All rules in a fixed order (gopher_quality, gopher_repetition, c4, fineweb, code, chat), with the
        ``thresholds``, ``disabled`` and ``enabled`` edits applied, then those of ``profile`` when given."""
        edits = [self] + ([self.profiles[profile]] if profile is not None else [])
        edited = []
        for rule in self._all_rules():
            update: dict = {}
            for edit in edits:
                if rule.name in edit.thresholds:
                    update["threshold"] = edit.thresholds[rule.name]
                if rule.name in edit.disabled:
                    update["enabled"] = False
                elif rule.name in edit.enabled:
                    update["enabled"] = True
            edited.append(rule.model_copy(update=update) if update else rule)
        return edited


def filter_documents(docs: pl.DataFrame, cfg: FiltersConfig | None = None, profile: str | None = None) -> StageResult:
    """Drop every document that breaks an enabled rule.

    In: the output of ``quality_signals`` (documents plus signal columns). Out: ``StageResult`` with the kept
    documents (all columns), one ``drop`` verdict per dropped document naming the first broken rule (``detail``
    lists all of them), and metrics: per-rule counts, documents in/kept/dropped, drops per kind.
    """
    cfg = cfg or FiltersConfig()
    result = apply_rules(docs, cfg.rules(profile), {"documents_in": docs.height, "profile": profile or "default"})
    dropped = docs.join(result.verdicts.select("doc_id"), on="doc_id", how="semi")
    per_kind = dropped.group_by("kind").len().sort("kind")
    result.metrics.update({
        "documents_kept": result.kept.height,
        "documents_dropped": docs.height - result.kept.height,
        "dropped_per_kind": dict(zip(per_kind["kind"].to_list(), per_kind["len"].to_list())),
    })
    result.metrics["broken_per_rule"] = {k: int(v) for k, v in result.metrics["broken_per_rule"].items()}
    result.metrics["dropped_per_rule"] = {k: int(v) for k, v in result.metrics["dropped_per_rule"].items()}
    return result


def _keep_all(rules: list[Rule]) -> pl.Expr:
    active = [r.keeps() for r in rules if r.enabled]
    return pl.all_horizontal(active) if active else pl.lit(True)


def _with_threshold(rule: Rule, threshold: float) -> Rule:
    return rule.model_copy(update={"threshold": float(threshold)})


def whatif(signals: pl.DataFrame, cfg: FiltersConfig, changes: dict[str, float],
           profile: str | None = None) -> pl.DataFrame:
    """How many documents threshold changes would add back or newly remove, per drop, from stored signals.

    In: ``signals`` (``quality_signals`` output, text not needed: doc_id, drop, kind and the signal columns),
    the current ``cfg`` (with the drops' filter ``profile``) and ``changes`` mapping rule names to new thresholds.
    Out: one row per drop and changed
    rule (that change alone), plus rule ``"*"`` for all changes together when there are several: columns
    ``drop, rule, added, removed, example_added, example_removed`` (examples: up to 3 doc_ids, sorted).
    A document is "added" when it is dropped now and kept after the change, "removed" the other way round.
    """
    rules = cfg.rules(profile)
    names = {r.name for r in rules}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise KeyError(f"unknown rule(s) {', '.join(unknown)}; known rules: {', '.join(sorted(names))}")
    scenarios = [(name, {name: value}) for name, value in changes.items()]
    if len(changes) > 1:
        scenarios.append(("*", dict(changes)))
    base = _keep_all(rules).alias("base")
    columns = [base]
    for i, (_, change) in enumerate(scenarios):
        changed = [_with_threshold(r, change[r.name]) if r.name in change else r for r in rules]
        columns.append(_keep_all(changed).alias(f"s{i}"))
    decisions = signals.select("doc_id", "drop", *columns)
    frames = []
    for i, (label, _) in enumerate(scenarios):
        s = pl.col(f"s{i}")
        added = ~pl.col("base") & s
        removed = pl.col("base") & ~s
        frames.append(
            decisions.sort("doc_id").group_by("drop", maintain_order=True).agg(
                pl.lit(label).alias("rule"),
                added.sum().cast(pl.Int64).alias("added"),
                removed.sum().cast(pl.Int64).alias("removed"),
                pl.col("doc_id").filter(added).head(3).alias("example_added"),
                pl.col("doc_id").filter(removed).head(3).alias("example_removed"),
            )
        )
    schema = {"drop": pl.String, "rule": pl.String, "added": pl.Int64, "removed": pl.Int64,
              "example_added": pl.List(pl.String), "example_removed": pl.List(pl.String)}
    if not frames:
        return pl.DataFrame(schema=schema)
    return pl.concat(frames).select(list(schema)).sort("drop", "rule")
