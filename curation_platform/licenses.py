"""License strings to SPDX ids and expressions, license categories, and the release license policy.

``normalize_license`` maps each distinct string once (licenses have few distinct values), so it is a column
operation over any number of records. A single license is looked up by a spelling-insensitive key ("Apache 2.0",
"apache-2", "Apache License, Version 2.0" all give ``Apache-2.0``); anything else is parsed as an SPDX expression
("mit or (apache 2.0 and bsd-3-clause)" gives ``MIT OR (Apache-2.0 AND BSD-3-Clause)``). Unknown ids, unknown
exceptions and unparsable expressions give null: the caller quarantines those records.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, NamedTuple

import polars as pl
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


class LicenseInfo(NamedTuple):
    category: Category
    attribution: bool  # must the notice / author credit travel with the data?


def _info(category: Category, attribution: bool = True) -> LicenseInfo:
    return LicenseInfo(category, attribution)


# Common SPDX ids (https://spdx.org/licenses/) with their category. Creative Commons variants carry their most
# restrictive clause: NC-ND is no-derivatives, NC-SA is non-commercial.
SPDX_LICENSES: dict[str, LicenseInfo] = {
    # Public domain and public-domain-equivalent: no conditions at all.
    "CC0-1.0": _info("public-domain", False),
    "CC-PDDC": _info("public-domain", False),
    "Unlicense": _info("public-domain", False),
    "PDDL-1.0": _info("public-domain", False),
    "0BSD": _info("public-domain", False),
    "MIT-0": _info("public-domain", False),
    "WTFPL": _info("public-domain", False),
    # Permissive: keep the notice.
    "MIT": _info("permissive"),
    "Apache-2.0": _info("permissive"),
    "BSD-2-Clause": _info("permissive"),
    "BSD-3-Clause": _info("permissive"),
    "ISC": _info("permissive"),
    "Zlib": _info("permissive"),
    "BSL-1.0": _info("permissive"),
    "PSF-2.0": _info("permissive"),
    "Python-2.0": _info("permissive"),
    "X11": _info("permissive"),
    "NCSA": _info("permissive"),
    "PostgreSQL": _info("permissive"),
    "UPL-1.0": _info("permissive"),
    "Artistic-2.0": _info("permissive"),
    "AFL-3.0": _info("permissive"),
    "ECL-2.0": _info("permissive"),
    "BlueOak-1.0.0": _info("permissive"),
    "Unicode-DFS-2016": _info("permissive"),
    "CC-BY-1.0": _info("permissive"),
    "CC-BY-2.0": _info("permissive"),
    "CC-BY-2.5": _info("permissive"),
    "CC-BY-3.0": _info("permissive"),
    "CC-BY-4.0": _info("permissive"),
    "ODC-By-1.0": _info("permissive"),
    "CDLA-Permissive-1.0": _info("permissive"),
    "CDLA-Permissive-2.0": _info("permissive"),
    # Weak copyleft: file- or library-level reciprocity.
    "LGPL-2.0-only": _info("weak-copyleft"),
    "LGPL-2.0-or-later": _info("weak-copyleft"),
    "LGPL-2.1-only": _info("weak-copyleft"),
    "LGPL-2.1-or-later": _info("weak-copyleft"),
    "LGPL-3.0-only": _info("weak-copyleft"),
    "LGPL-3.0-or-later": _info("weak-copyleft"),
    "MPL-1.1": _info("weak-copyleft"),
    "MPL-2.0": _info("weak-copyleft"),
    "EPL-1.0": _info("weak-copyleft"),
    "EPL-2.0": _info("weak-copyleft"),
    "CDDL-1.0": _info("weak-copyleft"),
    "CDDL-1.1": _info("weak-copyleft"),
    "MS-PL": _info("weak-copyleft"),
    "MS-RL": _info("weak-copyleft"),
    "OFL-1.1": _info("weak-copyleft"),
    # Copyleft: derivative works under the same license.
    "GPL-2.0-only": _info("copyleft"),
    "GPL-2.0-or-later": _info("copyleft"),
    "GPL-3.0-only": _info("copyleft"),
    "GPL-3.0-or-later": _info("copyleft"),
    "AGPL-3.0-only": _info("copyleft"),
    "AGPL-3.0-or-later": _info("copyleft"),
    "EUPL-1.1": _info("copyleft"),
    "EUPL-1.2": _info("copyleft"),
    "OSL-3.0": _info("copyleft"),
    # Share-alike (with attribution): content and data licenses.
    "CC-BY-SA-1.0": _info("share-alike"),
    "CC-BY-SA-2.0": _info("share-alike"),
    "CC-BY-SA-2.5": _info("share-alike"),
    "CC-BY-SA-3.0": _info("share-alike"),
    "CC-BY-SA-4.0": _info("share-alike"),
    "ODbL-1.0": _info("share-alike"),
    "CDLA-Sharing-1.0": _info("share-alike"),
    "GFDL-1.3-only": _info("share-alike"),
    "GFDL-1.3-or-later": _info("share-alike"),
    # Non-commercial.
    "CC-BY-NC-1.0": _info("non-commercial"),
    "CC-BY-NC-2.0": _info("non-commercial"),
    "CC-BY-NC-2.5": _info("non-commercial"),
    "CC-BY-NC-3.0": _info("non-commercial"),
    "CC-BY-NC-4.0": _info("non-commercial"),
    "CC-BY-NC-SA-2.0": _info("non-commercial"),
    "CC-BY-NC-SA-2.5": _info("non-commercial"),
    "CC-BY-NC-SA-3.0": _info("non-commercial"),
    "CC-BY-NC-SA-4.0": _info("non-commercial"),
    # No derivatives.
    "CC-BY-ND-1.0": _info("no-derivatives"),
    "CC-BY-ND-2.0": _info("no-derivatives"),
    "CC-BY-ND-2.5": _info("no-derivatives"),
    "CC-BY-ND-3.0": _info("no-derivatives"),
    "CC-BY-ND-4.0": _info("no-derivatives"),
    "CC-BY-NC-ND-2.0": _info("no-derivatives"),
    "CC-BY-NC-ND-2.5": _info("no-derivatives"),
    "CC-BY-NC-ND-3.0": _info("no-derivatives"),
    "CC-BY-NC-ND-4.0": _info("no-derivatives"),
    # Source-available, not open: treated like an unknown license.
    "BUSL-1.1": _info("proprietary/unknown"),
    "SSPL-1.0": _info("proprietary/unknown"),
    "Elastic-2.0": _info("proprietary/unknown"),
}

# SPDX license exceptions accepted after WITH; the license keeps its base category.
SPDX_EXCEPTIONS: tuple[str, ...] = (
    "Classpath-exception-2.0",
    "LLVM-exception",
    "GCC-exception-3.1",
    "Autoconf-exception-3.0",
    "Bison-exception-2.2",
)

# Spellings beyond the id itself. Keys go through the same folding as input, so only real variants are listed.
_SPELLINGS: dict[str, tuple[str, ...]] = {
    "MIT": ("MIT License", "The MIT License (MIT)", "Expat", "MIT/X11"),
    "Apache-2.0": ("ASL 2.0", "ASL-2", "Apache", "Apache Software License 2.0", "Apache Software License"),
    "BSD-2-Clause": ("Simplified BSD", "FreeBSD", "BSD-2"),
    "BSD-3-Clause": ("New BSD", "Modified BSD", "BSD-3", "Revised BSD"),
    "ISC": ("ISC License (ISCL)", "ISCL"),
    "BSL-1.0": ("Boost Software License 1.0", "Boost"),
    "PSF-2.0": ("Python Software Foundation License", "PSF"),
    "Zlib": ("zlib/libpng",),
    "CC0-1.0": ("CC0", "Creative Commons Zero v1.0 Universal", "CC Zero"),
    "CC-PDDC": ("Public Domain", "public-domain"),
    "Unlicense": ("The Unlicense",),
    "WTFPL": ("Do What The F*ck You Want To Public License",),
    "CC-BY-4.0": ("Creative Commons Attribution 4.0 International", "CC BY 4.0 International"),
    "CC-BY-SA-4.0": ("Creative Commons Attribution Share Alike 4.0 International", "CC BY-SA 4.0 International"),
    "CC-BY-NC-4.0": ("Creative Commons Attribution Non Commercial 4.0 International",),
    "CC-BY-NC-SA-4.0": ("Creative Commons Attribution Non Commercial Share Alike 4.0 International",),
    "CC-BY-ND-4.0": ("Creative Commons Attribution No Derivatives 4.0 International",),
    "CC-BY-NC-ND-4.0": ("Creative Commons Attribution Non Commercial No Derivatives 4.0 International",),
    "ODC-By-1.0": ("ODC-BY", "Open Data Commons Attribution License"),
    "ODbL-1.0": ("ODbL", "Open Database License"),
    "MPL-2.0": ("Mozilla Public License 2.0", "MPL 2"),
    "EPL-2.0": ("Eclipse Public License 2.0",),
    "GPL-2.0-only": ("GPL-2.0", "GPLv2", "GPL 2", "GNU General Public License v2.0", "GNU GPL v2", "GPL-2.0-only"),
    "GPL-2.0-or-later": ("GPL-2.0+", "GPLv2+", "GPL 2 or later", "GNU General Public License v2.0 or later"),
    "GPL-3.0-only": ("GPL-3.0", "GPLv3", "GPL 3", "GNU General Public License v3.0", "GNU GPL v3"),
    "GPL-3.0-or-later": ("GPL-3.0+", "GPLv3+", "GPL 3 or later", "GNU General Public License v3.0 or later"),
    "LGPL-2.1-only": ("LGPL-2.1", "LGPLv2.1", "GNU Lesser General Public License v2.1"),
    "LGPL-2.1-or-later": ("LGPL-2.1+", "LGPLv2.1+"),
    "LGPL-3.0-only": ("LGPL-3.0", "LGPLv3", "GNU Lesser General Public License v3.0"),
    "LGPL-3.0-or-later": ("LGPL-3.0+", "LGPLv3+"),
    "LGPL-2.0-only": ("LGPL-2.0", "LGPLv2"),
    "LGPL-2.0-or-later": ("LGPL-2.0+", "LGPLv2+"),
    "AGPL-3.0-only": ("AGPL-3.0", "AGPLv3", "GNU Affero General Public License v3.0"),
    "AGPL-3.0-or-later": ("AGPL-3.0+", "AGPLv3+"),
    "EUPL-1.2": ("European Union Public License 1.2",),
}

# Words that carry no meaning in a license name ("The MIT License", "Apache License, Version 2.0").
_FILLER = frozenset({"the", "license", "licence", "version", "international", "generic", "unported"})


def _key(value: str) -> str:
    """Spelling-insensitive key: lowercase words and numbers, fillers dropped, trailing ".0" of versions dropped.

    "Apache License, Version 2.0", "apache-2" and "ASL 2" style variants fold to "apache-2" / "asl-2".
    """
    text = value.strip().lower()
    text = re.sub(r"(?<=[a-z])v(?=\d)", " ", text)  # gplv3 -> gpl 3
    text = re.sub(r"\bv(?=\d)", "", text)  # v2.0 -> 2.0
    tokens = [t for t in re.findall(r"[a-z]+|\d+(?:\.\d+)*|\+|\*", text) if t not in _FILLER]
    tokens = [re.sub(r"(\.0)+$", "", t) if t[0].isdigit() else t for t in tokens]
    # "The MIT License (MIT)" repeats the id: fold consecutive duplicates.
    folded = [t for i, t in enumerate(tokens) if i == 0 or t != tokens[i - 1]]
    return "-".join(folded)


def _build_keys() -> dict[str, str]:
    keys: dict[str, str] = {}
    for spdx in SPDX_LICENSES:
        keys[_key(spdx)] = spdx
    for spdx, spellings in _SPELLINGS.items():
        for spelling in spellings:
            keys.setdefault(_key(spelling), spdx)
    return keys


_KEYS: dict[str, str] = _build_keys()
_EXCEPTION_KEYS: dict[str, str] = {_key(e): e for e in SPDX_EXCEPTIONS}


# ----------------------------------------------------------------------------------------------------------------
# SPDX expressions: a tiny recursive-descent parser (AND binds tighter than OR, WITH tightest).


@dataclass(frozen=True)
class _Id:
    spdx: str
    exception: str | None = None


@dataclass(frozen=True)
class _Op:
    op: Literal["AND", "OR"]
    parts: tuple[_Node, ...]


_Node = _Id | _Op

_TOKEN = re.compile(r"\s*(\(|\)|[^\s()]+)")


class _ParseError(ValueError):
    pass


def _tokens(text: str) -> list[str]:
    return [m.group(1) for m in _TOKEN.finditer(text)]


def _parse(text: str) -> _Node:
    tokens = _tokens(text)
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise _ParseError("unexpected end")
        pos += 1
        return tokens[pos - 1]

    def is_op(token: str | None, op: str) -> bool:
        return token is not None and token.upper() == op

    def atom() -> _Node:
        token = take()
        if token == "(":
            node = expression()
            if take() != ")":
                raise _ParseError("missing )")
            return node
        if token == ")" or token.upper() in ("AND", "OR", "WITH"):
            raise _ParseError(f"unexpected {token}")
        # A license name may span several words ("Apache 2.0"): read up to the next operator or bracket.
        words = [token]
        while peek() is not None and peek() not in ("(", ")") and peek().upper() not in ("AND", "OR", "WITH"):
            words.append(take())
        spdx = _KEYS.get(_key(" ".join(words)))
        if spdx is None:
            raise _ParseError(f"unknown license {' '.join(words)!r}")
        if is_op(peek(), "WITH"):
            take()
            words = [take()]
            while peek() is not None and peek() not in ("(", ")") and peek().upper() not in ("AND", "OR", "WITH"):
                words.append(take())
            exception = _EXCEPTION_KEYS.get(_key(" ".join(words)))
            if exception is None:
                raise _ParseError(f"unknown exception {' '.join(words)!r}")
            return _Id(spdx, exception)
        return _Id(spdx)

    def chain(op: Literal["AND", "OR"], inner) -> _Node:
        parts = [inner()]
        while is_op(peek(), op):
            take()
            parts.append(inner())
        if len(parts) == 1:
            return parts[0]
        # Flatten "A AND (B AND C)" and drop repeated sides so equal expressions print equally.
        flat: list[_Node] = []
        for part in parts:
            for side in part.parts if isinstance(part, _Op) and part.op == op else [part]:
                if side not in flat:
                    flat.append(side)
        return flat[0] if len(flat) == 1 else _Op(op, tuple(flat))

    def conjunction() -> _Node:
        return chain("AND", atom)

    def expression() -> _Node:
        return chain("OR", conjunction)

    node = expression()
    if pos != len(tokens):
        raise _ParseError(f"unexpected {tokens[pos]}")
    return node


def _render(node: _Node, parent: str | None = None) -> str:
    if isinstance(node, _Id):
        return node.spdx if node.exception is None else f"{node.spdx} WITH {node.exception}"
    text = f" {node.op} ".join(_render(p, node.op) for p in node.parts)
    return f"({text})" if parent is not None and parent != node.op else text


def _parse_normalized(value: str | None) -> _Node | None:
    """Parse tree of a license string, or None when it is unknown or unparsable."""
    if value is None or not value.strip() or value.count("(") != value.count(")"):
        return None
    whole = _KEYS.get(_key(value))
    if whole is not None:
        return _Id(whole)
    try:
        return _parse(value)
    except _ParseError:
        return None


def _normalize_one(value: str | None) -> str | None:
    node = _parse_normalized(value)
    return None if node is None else _render(node)


def normalize_license(values: pl.Series) -> pl.Series:
    """SPDX id or expression for each license string, or null where it is unknown (the caller quarantines those).

    ``["Apache 2.0", "MIT License", "mit or apache-2", "???"]`` -> ``["Apache-2.0", "MIT", "MIT OR Apache-2.0",
    null]``. Normalizing an output again returns it unchanged.
    """
    distinct = values.unique().to_list()
    mapping = {v: _normalize_one(v) for v in distinct}
    return values.replace_strict(mapping, return_dtype=pl.String, default=None)


# ----------------------------------------------------------------------------------------------------------------
# Categories and attribution


def _node_category(node: _Node) -> Category:
    if isinstance(node, _Id):
        return SPDX_LICENSES[node.spdx].category
    ranks = [_RESTRICTIVENESS.index(_node_category(p)) for p in node.parts]
    return _RESTRICTIVENESS[max(ranks) if node.op == "AND" else min(ranks)]


def _node_attribution(node: _Node) -> bool:
    if isinstance(node, _Id):
        return SPDX_LICENSES[node.spdx].attribution
    flags = [_node_attribution(p) for p in node.parts]
    # With a choice (OR) one can pick a side without attribution; with AND every side applies.
    return any(flags) if node.op == "AND" else all(flags)


def license_category(spdx: str | None) -> Category:
    """Category of a license id or expression (the stricter side of AND, the laxer of OR); unknown ->
    ``proprietary/unknown``."""
    node = _parse_normalized(spdx)
    return UNKNOWN if node is None else _node_category(node)


def attribution_required(spdx: str | None) -> bool:
    """Must the license notice or author credit travel with data under ``spdx`` (id or expression)?

    Unknown or null licenses answer True: when in doubt, credit.
    """
    node = _parse_normalized(spdx)
    return True if node is None else _node_attribution(node)


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


class LicensePolicy(BaseModel):
    """Release profiles and the generator terms that forbid training other models on a model's output."""

    model_config = ConfigDict(extra="forbid")

    profiles: dict[str, LicenseProfile] = Field(default_factory=_default_profiles)
    # Terms labels as manifests record them (provenance.generator.terms); review with counsel before relying on it.
    generators_forbidding_training: list[str] = Field(
        default_factory=lambda: [
            "no-training-of-competing-models",  # generic label, used by the bundled sample drops
            "openai-terms-of-use",
            "anthropic-commercial-terms",
            "google-gemini-api-terms",
            "llama-2-community-license",
        ]
    )


def _label(expr: pl.Expr) -> pl.Expr:
    # Terms labels and model names compare case- and separator-insensitively ("Llama 2 Community License").
    return expr.str.to_lowercase().str.replace_all(r"[^a-z0-9.*]+", "-").str.strip_chars("-")


def _label_str(value: str) -> str:
    return re.sub(r"[^a-z0-9.*]+", "-", value.lower()).strip("-")


def _allowed_node(node: _Node, categories: frozenset[str]) -> bool:
    if isinstance(node, _Id):
        return SPDX_LICENSES[node.spdx].category in categories
    sides = [_allowed_node(p, categories) for p in node.parts]
    return any(sides) if node.op == "OR" else all(sides)


def license_allowed(licenses: pl.Series, profile: LicenseProfile) -> pl.Series:
    """Boolean per license string: may a document under it ship in ``profile``?

    "A OR B" is allowed when either side is, "A AND B" only when both are; unknown or null licenses are not.
    Like :func:`normalize_license`, each distinct value is decided once.
    """
    categories = frozenset(profile.allowed_categories)
    distinct = licenses.unique().to_list()
    mapping = {}
    for value in distinct:
        node = _parse_normalized(value)
        mapping[value] = node is not None and _allowed_node(node, categories)
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
    (generated by a model whose terms forbid training other models, or excluded by the profile). A document
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
