"""License strings to SPDX ids and expressions, license categories, and the release license policy.

Licenses come from a maintained source, not a table of our own: the ScanCode license database (shipped offline
by the ``licensedcode-data`` package, one ``<key>.LICENSE`` file per license with a YAML header carrying its
SPDX id, other SPDX ids, names and ScanCode category) and the ``license-expression`` library, which parses and
validates SPDX expressions (AND, OR, WITH, brackets) against those ids. Every SPDX id and every
``LicenseRef-scancode-<key>`` id parses; the platform category of a license comes from its ScanCode category
through ``SCANCODE_CATEGORIES`` (the one place that mapping lives).

``normalize_license`` maps each distinct string once (licenses have few distinct values), so it is a column
operation over any number of records. A single license is also looked up by a spelling-insensitive key built
from the database's ids and names ("Apache 2.0", "apache-2", "Apache License, Version 2.0" all give
``Apache-2.0``); expressions are parsed per name ("mit or (apache 2.0 and bsd-3-clause)" gives
``MIT OR (Apache-2.0 AND BSD-3-Clause)``). Unknown ids, unknown exceptions and unparsable expressions give null:
the caller quarantines those records, naming the closest known id (``closest_license``).
"""

from __future__ import annotations

import difflib
import functools
import importlib.resources
import re
from dataclasses import dataclass
from typing import Literal

import polars as pl
import yaml
from license_expression import ExpressionError, LicenseSymbol, LicenseWithExceptionSymbol, Licensing
from pydantic import BaseModel, ConfigDict, Field

from curation_platform.errors import ConfigError
from curation_platform.records import DROP, StageResult, split_by_verdicts

Category = Literal[
    "public-domain",
    "permissive",
    "weak-copyleft",
    "copyleft",
    "share-alike",
    "non-commercial",
    "no-derivatives",
    "proprietary/unknown",
]
UNKNOWN: Category = "proprietary/unknown"

# From least to most restrictive: "A AND B" is as restrictive as its stricter side, "A OR B" as its laxer side.
_RESTRICTIVENESS: tuple[Category, ...] = (
    "public-domain",
    "permissive",
    "weak-copyleft",
    "share-alike",
    "copyleft",
    "non-commercial",
    "no-derivatives",
    "proprietary/unknown",
)

# ScanCode license category -> platform category. This is the whole mapping; ``platform_category`` applies it,
# after two refinements read from the license's own names: a license whose name or key says NoDerivatives is
# ``no-derivatives`` and one that says NonCommercial is ``non-commercial`` (ScanCode files CC-BY-NC-* under
# Source-available), and a ShareAlike license (CC-BY-SA-*) is ``share-alike`` rather than copyleft.
# Everything that is not an open license (free-with-restrictions, commercial, source-available, CLAs, bare
# patent grants, unstated) is ``proprietary/unknown``: no default profile ships it.
SCANCODE_CATEGORIES: dict[str, Category] = {
    "Public Domain": "public-domain",
    "Permissive": "permissive",
    "Copyleft Limited": "weak-copyleft",
    "Copyleft": "copyleft",
    "Proprietary Free": "proprietary/unknown",
    "Free Restricted": "proprietary/unknown",
    "Commercial": "proprietary/unknown",
    "Source-available": "proprietary/unknown",
    "CLA": "proprietary/unknown",
    "Patent License": "proprietary/unknown",
    "Unstated License": "proprietary/unknown",
}
_NO_DERIVATIVES = re.compile(r"no[- ]?deriv|(^|-)nd(-|$)", re.IGNORECASE)
_NON_COMMERCIAL = re.compile(r"non[- ]?commercial|(^|-)nc(-|$)", re.IGNORECASE)
_SHARE_ALIKE = re.compile(r"share[- ]?alike|^cc-by-sa-", re.IGNORECASE)


@dataclass(frozen=True)
class ScanCodeLicense:
    """One license (or exception) of the ScanCode license database."""

    key: str  # ScanCode key, e.g. "apache-2.0"
    spdx: str  # the id we write: its SPDX id, or "LicenseRef-scancode-<key>" when SPDX has none
    other_ids: tuple[str, ...]  # other SPDX ids and LicenseRefs that mean this license (e.g. "GPL-2.0")
    short_name: str
    name: str
    scancode_category: str
    is_exception: bool
    is_deprecated: bool
    is_unknown: bool


def platform_category(entry: ScanCodeLicense) -> Category:
    """The platform category of one ScanCode license (see ``SCANCODE_CATEGORIES``)."""
    names = f"{entry.key} {entry.short_name} {entry.name}"
    if _NO_DERIVATIVES.search(entry.key) or _NO_DERIVATIVES.search(names):
        return "no-derivatives"
    if _NON_COMMERCIAL.search(entry.key) or _NON_COMMERCIAL.search(names):
        return "non-commercial"
    base = SCANCODE_CATEGORIES.get(entry.scancode_category, UNKNOWN)
    if base in ("weak-copyleft", "copyleft") and (_SHARE_ALIKE.search(entry.key) or _SHARE_ALIKE.search(names)):
        return "share-alike"
    return base


def _header(text: str) -> dict:
    # A .LICENSE file is "---\n<yaml header>\n---\n<license text>"; only the header is read.
    _, header, _ = text.split("---", 2)
    return yaml.load(header, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}


@functools.lru_cache(maxsize=1)
def scancode_licenses() -> dict[str, ScanCodeLicense]:
    """Every license and exception of the bundled ScanCode database, by the id we write (loaded once)."""
    folder = importlib.resources.files("licensedcode") / "data" / "licenses"
    entries: dict[str, ScanCodeLicense] = {}
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if not path.name.endswith(".LICENSE"):
            continue
        header = _header(path.read_text(encoding="utf-8"))
        key = header["key"]
        ref = f"LicenseRef-scancode-{key}"
        spdx = header.get("spdx_license_key") or ref
        entry = ScanCodeLicense(
            key=key,
            spdx=spdx,
            other_ids=tuple(dict.fromkeys([*(header.get("other_spdx_license_keys") or []), ref])),
            short_name=header.get("short_name") or key,
            name=header.get("name") or key,
            scancode_category=header.get("category") or "Unstated License",
            is_exception=bool(header.get("is_exception")),
            is_deprecated=bool(header.get("is_deprecated")),
            is_unknown=bool(header.get("is_unknown")),
        )
        previous = entries.get(spdx)
        # A deprecated key may share its SPDX id with the current one: the current one wins.
        if previous is None or (previous.is_deprecated and not entry.is_deprecated):
            entries[spdx] = entry
    # A deprecated key that a current license lists among its other ids is that license (odc-1.0 is ODC-By-1.0).
    claimed = {other.lower() for e in entries.values() if not e.is_deprecated for other in e.other_ids}
    return {spdx: e for spdx, e in entries.items() if not (e.is_deprecated and spdx.lower() in claimed)}


def _ordered_entries() -> list[ScanCodeLicense]:
    # Current licenses claim ids and spellings before deprecated ones; within each, the id order is stable.
    return sorted(scancode_licenses().values(), key=lambda e: (e.is_deprecated, e.spdx.lower()))


@functools.lru_cache(maxsize=1)
def _licensing() -> Licensing:
    """A ``license_expression`` Licensing whose symbols are the database's ids, other ids as aliases."""
    taken: set[str] = set()
    symbols = []
    entries = _ordered_entries()
    for entry in entries:
        taken.add(entry.spdx.lower())
    for entry in entries:
        aliases = tuple(a for a in entry.other_ids if a.lower() not in taken)
        taken.update(a.lower() for a in aliases)
        symbols.append(LicenseSymbol(entry.spdx, aliases=aliases, is_exception=entry.is_exception))
    return Licensing(symbols)


# Words that carry no meaning in a license name ("The MIT License", "Apache License, Version 2.0").
_FILLER = frozenset({"the", "license", "licence", "version", "international", "generic", "unported"})


def _key(value: str) -> str:
    """Spelling-insensitive key: lowercase words and numbers, fillers dropped, trailing ".0" of versions dropped.

    "Apache License, Version 2.0", "apache-2" and "Apache 2.0" all fold to "apache-2".
    """
    text = value.strip().lower()
    text = re.sub(r"\bpublic\s+licen[cs]e\b", "license", text)  # "... 4.0 International Public License"
    text = re.sub(r"(?<=[a-z])v(?=\d)", " ", text)  # gplv3 -> gpl 3
    text = re.sub(r"\bv(?=\d)", "", text)  # v2.0 -> 2.0
    tokens = [t for t in re.findall(r"[a-z]+|\d+(?:\.\d+)*|\+|\*", text) if t not in _FILLER]
    tokens = [re.sub(r"(\.0)+$", "", t) if t[0].isdigit() else t for t in tokens]
    # "The MIT License (MIT)" repeats the id: fold consecutive duplicates.
    folded = [t for i, t in enumerate(tokens) if i == 0 or t != tokens[i - 1]]
    return "-".join(folded)


# Community spellings the database does not carry (Fedora's "ASL 2.0", the bare "CC0" and "ODC-BY").
_COMMUNITY_SPELLINGS = {"ASL 2.0": "Apache-2.0", "CC0": "CC0-1.0", "ODC-BY": "ODC-By-1.0"}


@functools.lru_cache(maxsize=1)
def _spellings() -> dict[str, tuple[str, bool]]:
    """Spelling key -> (id, is_exception), from the database's ids first, then short names, then names.

    A spelling shared by two licenses goes to the one listed first (current before deprecated); the bare words
    of ScanCode's "unknown" placeholders are not spellings, so "unknown" stays unknown.
    """
    keys: dict[str, tuple[str, bool]] = {}
    entries = _ordered_entries()
    for field in ("ids", "short_name", "name"):
        for entry in entries:
            if field == "ids":
                values = [entry.spdx, *entry.other_ids]
            elif entry.is_unknown:
                continue
            else:
                values = [getattr(entry, field)]
            for value in values:
                key = _key(value)
                if key:
                    keys.setdefault(key, (entry.spdx, entry.is_exception))
    for spelling, spdx in _COMMUNITY_SPELLINGS.items():
        keys.setdefault(_key(spelling), (spdx, False))
    return keys


# Operators and brackets of an SPDX expression; license names between them may span several words.
_OPERATOR = re.compile(r"(\(|\)|(?<![\w.+-])(?:AND|OR|WITH)(?![\w.+-]))", re.IGNORECASE)


def _canonical_id(name: str, exception: bool) -> str | None:
    symbol = _licensing().known_symbols.get(name)
    if symbol is None:
        symbol = _licensing().known_symbols_lowercase.get(name.lower())
    if symbol is not None and bool(symbol.is_exception) == exception:
        return symbol.key
    found = _spellings().get(_key(name))
    if found is not None and found[1] == exception:
        return found[0]
    return None


def _parse(value: str | None):
    """Parsed ``license_expression`` expression of a license string, or None when unknown or unparsable."""
    if value is None or not value.strip() or value.count("(") != value.count(")"):
        return None
    licensing = _licensing()
    whole = _canonical_id(value.strip(), exception=False)  # one license: its id, or a spelling of it
    if whole is not None:
        return licensing.parse(whole)
    parts = [p.strip() for p in _OPERATOR.split(value) if p.strip()]
    rebuilt: list[str] = []
    for i, part in enumerate(parts):
        if _OPERATOR.fullmatch(part):
            rebuilt.append(part.upper())
            continue
        after_with = i > 0 and parts[i - 1].upper() == "WITH"
        known = _canonical_id(part, exception=after_with)
        if known is None:
            return None
        rebuilt.append(known)
    try:
        return licensing.dedup(licensing.parse(" ".join(rebuilt), validate=True, strict=True))
    except (ExpressionError, IndexError):  # license-expression raises IndexError on an empty bracket, "( )"
        return None


@functools.lru_cache(maxsize=4096)
def _normalize_one(value: str | None) -> str | None:
    parsed = _parse(value)
    return None if parsed is None else str(parsed)


def normalize_license(values: pl.Series) -> pl.Series:
    """SPDX id or expression for each license string, or null where it is unknown (the caller quarantines those).

    ``["Apache 2.0", "MIT License", "mit or apache-2", "???"]`` -> ``["Apache-2.0", "MIT", "MIT OR Apache-2.0",
    null]``. Normalizing an output again returns it unchanged.
    """
    distinct = values.unique().to_list()
    mapping = {v: _normalize_one(v) for v in distinct}
    return values.replace_strict(mapping, return_dtype=pl.String, default=None)


@functools.lru_cache(maxsize=1)
def _names_to_ids() -> dict[str, str]:
    """Lowercased id and short name of every current license -> its id (what ``closest_license`` searches)."""
    names: dict[str, str] = {}
    for entry in _ordered_entries():
        if not entry.is_exception and not entry.is_deprecated:
            names.setdefault(entry.spdx.lower(), entry.spdx)
            names.setdefault(entry.short_name.lower(), entry.spdx)
    return names


def closest_license(values: pl.Series) -> pl.Series:
    """For each (unknown) license string, the known license id closest by spelling (difflib over the ids and
    short names of the database), or null for an empty string. Decided once per distinct value; meant for the
    few unknown values, to name a likely fix in a quarantine message.

    ``["Apache-2", "Proprietary - ask legal"]`` -> ``["Apache-2.0", "LicenseRef-scancode-proprietary-license"]``.
    """
    names = _names_to_ids()

    def closest(value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        match = difflib.get_close_matches(value.strip().lower(), list(names), n=1, cutoff=0.0)
        return names[match[0]] if match else None

    mapping = {v: closest(v) for v in values.unique().to_list()}
    return values.replace_strict(mapping, return_dtype=pl.String, default=None)


# ----------------------------------------------------------------------------------------------------------------
# Categories and attribution


def _symbol_entry(symbol) -> ScanCodeLicense:
    if isinstance(symbol, LicenseWithExceptionSymbol):  # an exception only adds permissions: the base decides
        symbol = symbol.license_symbol
    return scancode_licenses()[symbol.key]


def _node_category(node) -> Category:
    if isinstance(node, (LicenseSymbol, LicenseWithExceptionSymbol)):
        return platform_category(_symbol_entry(node))
    ranks = [_RESTRICTIVENESS.index(_node_category(p)) for p in node.args]
    return _RESTRICTIVENESS[max(ranks) if isinstance(node, _licensing().AND) else min(ranks)]


# Permissive licenses whose text drops the notice requirement (SPDX ids).
_NO_ATTRIBUTION = frozenset({"0BSD", "MIT-0", "Unlicense", "WTFPL", "CC0-1.0", "PDDL-1.0"})


def _node_attribution(node) -> bool:
    if isinstance(node, (LicenseSymbol, LicenseWithExceptionSymbol)):
        # ScanCode records no attribution flag: public-domain dedications and the few permissive licenses written
        # to waive the notice requirement need no credit.
        key = getattr(node, "license_symbol", node).key
        return key not in _NO_ATTRIBUTION and platform_category(_symbol_entry(node)) != "public-domain"
    flags = [_node_attribution(p) for p in node.args]
    # With a choice (OR) one can pick a side without attribution; with AND every side applies.
    return any(flags) if isinstance(node, _licensing().AND) else all(flags)


@functools.lru_cache(maxsize=4096)
def license_category(spdx: str | None) -> Category:
    """Category of a license id or expression (the stricter side of AND, the laxer of OR); unknown ->
    ``proprietary/unknown``."""
    node = _parse(spdx)
    return UNKNOWN if node is None else _node_category(node)


@functools.lru_cache(maxsize=4096)
def attribution_required(spdx: str | None) -> bool:
    """Must the license notice or author credit travel with data under ``spdx`` (id or expression)?

    Unknown or null licenses answer True: when in doubt, credit.
    """
    node = _parse(spdx)
    return True if node is None else _node_attribution(node)


def license_restrictiveness(values: pl.Series) -> pl.Series:
    """Rank of each license string's category from least (0, public-domain) to most restrictive (7, unknown or
    null), decided once per distinct value: a keep-rule key that prefers the more permissive copy.

    ``["CC0-1.0", "MIT", "CC-BY-NC-4.0", None]`` -> ``[0, 1, 5, 7]``.
    """
    mapping = {v: _RESTRICTIVENESS.index(license_category(v)) for v in values.unique().to_list()}
    return values.replace_strict(mapping, return_dtype=pl.Int32, default=len(_RESTRICTIVENESS) - 1).fill_null(
        len(_RESTRICTIVENESS) - 1)


# ----------------------------------------------------------------------------------------------------------------
# Release policy


class LicenseProfile(BaseModel):
    """Which documents a release profile may contain."""

    model_config = ConfigDict(extra="forbid")

    allowed_categories: list[Category] = Field(default_factory=lambda: ["public-domain", "permissive"])
    # Generator models whose output this profile never ships; a trailing * matches a prefix ("gpt-4*").
    excluded_generators: list[str] = Field(default_factory=list)
    # If set, synthetic documents must name generator terms from this list; None accepts any terms not forbidden.
    allowed_generator_terms: list[str] | None = None


def _default_profiles() -> dict[str, LicenseProfile]:
    # Profiles follow common practice for open releases (e.g. The Stack's permissive-only code, Dolma's ODC-By).
    return {
        "commercial": LicenseProfile(allowed_categories=["public-domain", "permissive"]),
        "research": LicenseProfile(allowed_categories=["public-domain", "permissive", "non-commercial"]),
        "open-weights": LicenseProfile(allowed_categories=["public-domain", "permissive", "share-alike"]),
    }


class GeneratorTerms(BaseModel):
    """One entry of the generator-terms vocabulary: what the terms mean and whether they forbid training."""

    model_config = ConfigDict(extra="forbid")

    meaning: str
    forbids_training: bool


def _default_generator_terms() -> dict[str, GeneratorTerms]:
    # Review with counsel before relying on it; curation.yaml carries the same vocabulary.
    return {
        "no-training-of-competing-models": GeneratorTerms(
            meaning="generic label: outputs may not train models that compete with the generator",
            forbids_training=True),
        "openai-terms-of-use": GeneratorTerms(
            meaning="OpenAI Terms of Use: no developing models that compete with OpenAI",
            forbids_training=True),
        "anthropic-commercial-terms": GeneratorTerms(
            meaning="Anthropic Commercial Terms: no building competing products or models",
            forbids_training=True),
        "google-gemini-api-terms": GeneratorTerms(
            meaning="Gemini API Additional Terms: no developing models that compete with Gemini",
            forbids_training=True),
        "llama-2-community-license": GeneratorTerms(
            meaning="Llama 2 Community License: no improving other large language models",
            forbids_training=True),
        "unrestricted-outputs": GeneratorTerms(
            meaning="the generator's terms place no restriction on training with its outputs",
            forbids_training=False),
        "apache-2.0": GeneratorTerms(
            meaning="open-weights generator under Apache 2.0: outputs unrestricted", forbids_training=False),
        "mit": GeneratorTerms(meaning="open-weights generator under MIT: outputs unrestricted",
                              forbids_training=False),
    }


class LicensePolicy(BaseModel):
    """Release profiles and the vocabulary of generator terms (manifest ``generator.terms``)."""

    model_config = ConfigDict(extra="forbid")

    profiles: dict[str, LicenseProfile] = Field(default_factory=_default_profiles)
    # Every terms label a manifest may name; a drop naming another one is rejected at ingest.
    generator_terms: dict[str, GeneratorTerms] = Field(default_factory=_default_generator_terms)

    @property
    def generators_forbidding_training(self) -> list[str]:
        """The vocabulary's terms whose outputs may not train other models."""
        return [term for term, entry in self.generator_terms.items() if entry.forbids_training]

    def unknown_generator_terms(self, terms: str) -> str | None:
        """None when ``terms`` is in the vocabulary (case- and separator-insensitive), else the error text."""
        if _label_str(terms) in {_label_str(t) for t in self.generator_terms}:
            return None
        return f"generator terms {terms!r} are not in the vocabulary; known terms: {', '.join(self.generator_terms)}"


def _label(expr: pl.Expr) -> pl.Expr:
    # Terms labels and model names compare case- and separator-insensitively ("Llama 2 Community License").
    return expr.str.to_lowercase().str.replace_all(r"[^a-z0-9.*]+", "-").str.strip_chars("-")


def _label_str(value: str) -> str:
    return re.sub(r"[^a-z0-9.*]+", "-", value.lower()).strip("-")


def _node_allowed(node, categories: frozenset[str]) -> bool:
    if isinstance(node, (LicenseSymbol, LicenseWithExceptionSymbol)):
        return platform_category(_symbol_entry(node)) in categories
    sides = [_node_allowed(p, categories) for p in node.args]
    return all(sides) if isinstance(node, _licensing().AND) else any(sides)


def license_allowed(licenses: pl.Series, profile: LicenseProfile) -> pl.Series:
    """Boolean per license string: may a document under it ship in ``profile``?

    "A OR B" is allowed when either side is, "A AND B" only when both are; unknown or null licenses are not.
    Like :func:`normalize_license`, each distinct value is decided once.
    """
    categories = frozenset(profile.allowed_categories)
    mapping = {}
    for value in licenses.unique().to_list():
        node = _parse(value)
        mapping[value] = node is not None and _node_allowed(node, categories)
    return licenses.replace_strict(mapping, return_dtype=pl.Boolean, default=False).fill_null(False).rename(
        licenses.name
    )


def _generator_columns(docs: pl.DataFrame) -> pl.DataFrame:
    """(generator_model, generator_terms) from each document's provenance JSON (null when absent)."""
    if "provenance" not in docs.columns:
        return pl.DataFrame({"generator_model": [None] * docs.height, "generator_terms": [None] * docs.height},
                            schema={"generator_model": pl.String, "generator_terms": pl.String})
    provenance = pl.col("provenance")
    return docs.select(
        provenance.str.json_path_match("$.generator.model").alias("generator_model"),
        provenance.str.json_path_match("$.generator.terms").alias("generator_terms"),
    )


def release_license_verdicts(docs: pl.DataFrame, policy: LicensePolicy, profile_name: str) -> StageResult:
    """Keep the documents ``profile_name`` may ship; drop the rest.

    ``docs`` has ``doc_id``, ``license`` (SPDX) and ``provenance`` (JSON, optional ``generator: {model, terms}``).
    Rules: ``license.not_in_profile`` (license unknown or its category not allowed) and ``license.generator_terms``
    (generated by a model whose terms forbid training other models or are not in the terms vocabulary, or
    excluded by the profile). A document
    breaking both is dropped once, under the license rule, with both reasons in ``detail``.
    """
    if profile_name not in policy.profiles:
        raise ConfigError(
            f"license profile {profile_name!r} is not defined; known profiles: {', '.join(sorted(policy.profiles))}"
        )
    profile = policy.profiles[profile_name]
    allowed_text = ", ".join(profile.allowed_categories)
    categories = {v: license_category(v) for v in docs["license"].unique().to_list()}

    forbidden_terms = [_label_str(t) for t in policy.generators_forbidding_training]
    known_terms = [_label_str(t) for t in policy.generator_terms]
    exact_models = [_label_str(m) for m in profile.excluded_generators if not m.endswith("*")]
    model_prefixes = [_label_str(m[:-1]) for m in profile.excluded_generators if m.endswith("*")]

    gen = _generator_columns(docs).select(_label(pl.col("generator_model")).alias("model"),
                                          _label(pl.col("generator_terms")).alias("terms"))
    model, terms = pl.col("model"), pl.col("terms")
    excluded_model = model.is_in(exact_models)
    for prefix in model_prefixes:
        excluded_model = excluded_model | model.str.starts_with(prefix)
    has_generator = model.is_not_null() | terms.is_not_null()
    terms_not_allowed = (
        has_generator & (terms.is_null() | ~terms.is_in([_label_str(t) for t in profile.allowed_generator_terms]))
        if profile.allowed_generator_terms is not None
        else pl.lit(False)
    )
    generator_reason = (
        pl.when(terms.is_in(forbidden_terms))
        .then(pl.format("generator {} under terms {} that forbid training other models",
                        model.fill_null("(unnamed)"), terms))
        # Ingest rejects unknown terms; one left from an older vocabulary is not shipped on trust.
        .when(terms.is_not_null() & ~terms.is_in(known_terms))
        .then(pl.format("generator terms {} are not in the vocabulary", terms))
        .when(excluded_model.fill_null(False))
        .then(pl.format("generator {} is excluded from profile {}", model, pl.lit(profile_name)))
        .when(terms_not_allowed.fill_null(False))
        .then(pl.format("generator terms {} not allowed in profile {}", terms.fill_null("(none)"),
                        pl.lit(profile_name)))
        .otherwise(None)
    )

    checked = pl.concat(
        [
            docs.select(
                "doc_id",
                pl.col("license"),
                license_allowed(docs["license"], profile).alias("license_ok"),
                pl.col("license").replace_strict(categories, default=UNKNOWN, return_dtype=pl.String)
                .fill_null(UNKNOWN).alias("category"),
            ),
            gen.select(generator_reason.alias("generator_reason")),
        ],
        how="horizontal",
    )
    license_reason = pl.format(
        "license {} ({}) not allowed in profile {} (allows {})",
        pl.col("license").fill_null("unknown"), pl.col("category"), pl.lit(profile_name), pl.lit(allowed_text),
    )
    verdicts = checked.filter(~pl.col("license_ok") | pl.col("generator_reason").is_not_null()).select(
        "doc_id",
        pl.lit(DROP).alias("verdict"),
        pl.when(~pl.col("license_ok")).then(pl.lit("license.not_in_profile"))
        .otherwise(pl.lit("license.generator_terms")).alias("rule"),
        pl.when(~pl.col("license_ok")).then(pl.lit(f"not in [{allowed_text}]"))
        .otherwise(pl.lit("forbids training")).alias("threshold"),
        pl.concat_str(
            [pl.when(~pl.col("license_ok")).then(license_reason), pl.col("generator_reason")],
            separator="; ",
            ignore_nulls=True,
        ).alias("detail"),
    )
    per_rule = verdicts.group_by("rule").len().sort("rule")
    kept_licenses = checked.filter(pl.col("license_ok") & pl.col("generator_reason").is_null())
    metrics = {
        "profile": profile_name,
        "dropped_per_rule": dict(zip(per_rule["rule"], per_rule["len"])),
        "kept_documents": kept_licenses.height,
        "kept_per_category": {
            row["category"]: row["len"] for row in kept_licenses.group_by("category").len().sort("category").to_dicts()
        },
    }
    return split_by_verdicts(docs, verdicts, metrics)


def license_breakdown(docs: pl.DataFrame) -> list[dict]:
    """Documents per license for a data card: ``[{license, documents, attribution_required, category}]``,
    most documents first (ties by license). A null license is reported as ``None`` in ``proprietary/unknown``."""
    counts = docs.group_by("license").len("documents").sort(
        ["documents", "license"], descending=[True, False], nulls_last=True
    )
    return [
        {
            "license": row["license"],
            "documents": int(row["documents"]),
            "attribution_required": attribution_required(row["license"]),
            "category": license_category(row["license"]),
        }
        for row in counts.to_dicts()
    ]
