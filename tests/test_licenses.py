import json

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation_platform.errors import ConfigError
from curation_platform.licenses import (
    SPDX_LICENSES,
    LicensePolicy,
    LicenseProfile,
    _key,
    attribution_required,
    license_allowed,
    license_breakdown,
    license_category,
    normalize_license,
    release_license_verdicts,
)


def _norm(values: list[str | None]) -> list[str | None]:
    return normalize_license(pl.Series("license", values, dtype=pl.String)).to_list()


@pytest.mark.parametrize(
    ("raw", "spdx"),
    [
        ("Apache 2.0", "Apache-2.0"),
        ("apache-2", "Apache-2.0"),
        ("ASL 2.0", "Apache-2.0"),
        ("Apache License, Version 2.0", "Apache-2.0"),
        ("apache_2.0", "Apache-2.0"),
        ("MIT License", "MIT"),
        ("The MIT License (MIT)", "MIT"),
        ("mit", "MIT"),
        ("GPLv3", "GPL-3.0-only"),
        ("GPL-3.0", "GPL-3.0-only"),
        ("GPL-3.0-only", "GPL-3.0-only"),
        ("GPLv3+", "GPL-3.0-or-later"),
        ("GPL-2.0-or-later", "GPL-2.0-or-later"),
        ("LGPLv2.1", "LGPL-2.1-only"),
        ("CC BY-NC 4.0", "CC-BY-NC-4.0"),
        ("cc-by-sa-4.0", "CC-BY-SA-4.0"),
        ("CC BY 4.0", "CC-BY-4.0"),
        ("Creative Commons Attribution 4.0 International", "CC-BY-4.0"),
        ("CC BY-NC-ND 4.0", "CC-BY-NC-ND-4.0"),
        ("CC0", "CC0-1.0"),
        ("BSD 3-Clause", "BSD-3-Clause"),
        ("odc-by", "ODC-By-1.0"),
        ("public domain", "CC-PDDC"),
    ],
)
def test_common_spellings_map_to_spdx(raw, spdx):
    assert _norm([raw]) == [spdx]


@pytest.mark.parametrize(
    ("raw", "spdx"),
    [
        ("MIT OR Apache-2.0", "MIT OR Apache-2.0"),
        ("mit or apache 2.0", "MIT OR Apache-2.0"),
        ("(MIT AND BSD-3-Clause)", "MIT AND BSD-3-Clause"),
        ("MIT and (Apache License, Version 2.0 or BSD-2-Clause)", "MIT AND (Apache-2.0 OR BSD-2-Clause)"),
        ("(MIT OR Apache-2.0) AND BSD-3-Clause", "(MIT OR Apache-2.0) AND BSD-3-Clause"),
        ("GPL-2.0 with Classpath-exception-2.0", "GPL-2.0-only WITH Classpath-exception-2.0"),
        ("MIT OR MIT", "MIT"),
    ],
)
def test_expressions_are_normalized_per_id_with_upper_case_operators(raw, spdx):
    assert _norm([raw]) == [spdx]


@pytest.mark.parametrize(
    "raw",
    ["", "   ", "unknown", "other", "Proprietary", "MIT OR", "(MIT", "MIT AND Foo-1.0", "GPL", "BSD",
     "GPL-2.0 WITH No-Such-Exception", "LicenseRef-Custom", None],
)
def test_unknown_or_unparsable_licenses_give_null(raw):
    assert _norm([raw]) == [None]


def test_normalize_license_keeps_order_and_length():
    values = ["MIT License", None, "apache-2", "MIT License", "nonsense"]
    assert _norm(values) == ["MIT", None, "Apache-2.0", "MIT", None]


def test_no_two_spdx_ids_share_a_spelling_key():
    keys = {}
    for spdx in SPDX_LICENSES:
        assert _key(spdx) not in keys, (spdx, keys.get(_key(spdx)))
        keys[_key(spdx)] = spdx


def test_every_table_id_normalizes_to_itself():
    ids = sorted(SPDX_LICENSES)
    assert _norm(ids) == ids


_ids = st.sampled_from(sorted(SPDX_LICENSES))
_expressions = st.recursive(
    _ids,
    lambda inner: st.tuples(inner, st.sampled_from([" AND ", " OR ", " and ", " or "]), inner).map(
        lambda t: f"({t[0]}{t[1]}{t[2]})"
    ),
    max_leaves=5,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(_expressions, st.text(max_size=30)), min_size=1, max_size=8))
def test_normalize_license_is_idempotent_on_its_outputs(values):
    once = normalize_license(pl.Series("license", values, dtype=pl.String))
    twice = normalize_license(once)
    assert twice.to_list() == once.to_list()


@settings(max_examples=100, deadline=None)
@given(_expressions)
def test_valid_expressions_always_normalize(expression):
    assert _norm([expression])[0] is not None


def test_categories_and_attribution():
    assert license_category("CC0-1.0") == "public-domain"
    assert license_category("MIT") == "permissive"
    assert license_category("MPL-2.0") == "weak-copyleft"
    assert license_category("GPL-3.0-only") == "copyleft"
    assert license_category("CC-BY-SA-4.0") == "share-alike"
    assert license_category("CC-BY-NC-4.0") == "non-commercial"
    assert license_category("CC-BY-ND-4.0") == "no-derivatives"
    assert license_category(None) == "proprietary/unknown"
    # AND takes the stricter side, OR the laxer one.
    assert license_category("MIT AND GPL-3.0-only") == "copyleft"
    assert license_category("MIT OR GPL-3.0-only") == "permissive"

    assert attribution_required("MIT") is True
    assert attribution_required("CC-BY-4.0") is True
    assert attribution_required("CC0-1.0") is False
    assert attribution_required("Unlicense") is False
    assert attribution_required("CC0-1.0 OR MIT") is False  # one may pick CC0
    assert attribution_required("CC0-1.0 AND MIT") is True
    assert attribution_required(None) is True


def _profile(name: str) -> LicenseProfile:
    return LicensePolicy().profiles[name]


def test_cc_by_nc_never_passes_commercial_but_passes_research():
    licenses = pl.Series("license", ["CC-BY-NC-4.0", "CC BY-NC 4.0"])
    assert license_allowed(licenses, _profile("commercial")).to_list() == [False, False]
    assert license_allowed(licenses, _profile("research")).to_list() == [True, True]
    assert license_allowed(licenses, _profile("open-weights")).to_list() == [False, False]


def test_license_allowed_per_profile_and_expression():
    licenses = pl.Series(
        "license",
        ["MIT", "CC-BY-SA-4.0", "GPL-3.0-only", "MIT OR GPL-3.0-only", "MIT AND GPL-3.0-only", None, "junk", "CC0-1.0"],
    )
    assert license_allowed(licenses, _profile("commercial")).to_list() == [
        True, False, False, True, False, False, False, True
    ]
    assert license_allowed(licenses, _profile("open-weights")).to_list() == [
        True, True, False, True, False, False, False, True
    ]


def _docs(rows: list[tuple[str, str | None, dict | None]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "doc_id": [r[0] for r in rows],
            "license": [r[1] for r in rows],
            "kind": ["synthetic" if r[2] and "generator" in r[2] else "text" for r in rows],
            "text": [f"document {r[0]}" for r in rows],
            "provenance": [json.dumps(r[2] or {}) for r in rows],
        },
        schema_overrides={"license": pl.String},
    )


def test_release_verdicts_split_mixed_per_record_licenses():
    docs = _docs(
        [
            ("a", "MIT", None),
            ("b", "CC-BY-NC-4.0", None),
            ("c", "Apache-2.0 OR GPL-3.0-only", None),
            ("d", None, None),
            ("e", "CC-BY-SA-4.0", None),
            ("f", "CC0-1.0", None),
        ]
    )
    result = release_license_verdicts(docs, LicensePolicy(), "commercial")
    assert result.kept["doc_id"].to_list() == ["a", "c", "f"]
    verdicts = result.verdicts.sort("doc_id")
    assert verdicts["doc_id"].to_list() == ["b", "d", "e"]
    assert set(verdicts["rule"]) == {"license.not_in_profile"}
    assert set(verdicts["verdict"]) == {"drop"}
    assert "CC-BY-NC-4.0 (non-commercial)" in verdicts["detail"][0]
    assert "license unknown" in verdicts["detail"][1]
    assert result.metrics["dropped_per_rule"] == {"license.not_in_profile": 3}

    research = release_license_verdicts(docs, LicensePolicy(), "research")
    assert research.kept["doc_id"].to_list() == ["a", "b", "c", "f"]


def test_generator_terms_forbidding_training_are_dropped_in_every_profile():
    docs = _docs(
        [
            ("s1", "CC0-1.0", {"generator": {"model": "gpt-4o", "terms": "OpenAI Terms of Use"}}),
            ("s2", "CC0-1.0", {"generator": {"model": "Qwen2.5-72B-Instruct", "terms": "apache-2.0"}}),
            ("s3", "CC0-1.0", {"generator": {"model": "Llama-2-70b-chat", "terms": "llama-2-community-license"}}),
            ("s4", "CC0-1.0", {"generator": {"model": "example-instruct-70b",
                                             "terms": "no-training-of-competing-models"}}),
            ("h1", "MIT", {"crawl": "2024-10"}),
        ]
    )
    for profile in ("commercial", "research", "open-weights"):
        result = release_license_verdicts(docs, LicensePolicy(), profile)
        assert result.kept["doc_id"].to_list() == ["s2", "h1"]
        assert result.verdicts.sort("doc_id")["rule"].to_list() == ["license.generator_terms"] * 3
        assert "forbid training" in result.verdicts["detail"][0]


def test_profile_excluded_generators_and_allowed_terms():
    docs = _docs(
        [
            ("s1", "MIT", {"generator": {"model": "gpt-4o-mini", "terms": "custom-ok"}}),
            ("s2", "MIT", {"generator": {"model": "mistral-large", "terms": "apache-2.0"}}),
            ("s3", "MIT", {"generator": {"model": "phi-3", "terms": "mit"}}),
            ("h1", "MIT", None),
        ]
    )
    policy = LicensePolicy(
        profiles={"strict": LicenseProfile(excluded_generators=["GPT-4*"], allowed_generator_terms=["Apache 2.0"])},
        generators_forbidding_training=[],
    )
    result = release_license_verdicts(docs, policy, "strict")
    assert result.kept["doc_id"].to_list() == ["s2", "h1"]
    details = dict(zip(result.verdicts["doc_id"], result.verdicts["detail"]))
    assert "excluded" in details["s1"]
    assert "terms mit not allowed" in details["s3"]


def test_document_breaking_both_rules_is_dropped_once_under_the_license_rule():
    docs = _docs([("x", "CC-BY-NC-4.0", {"generator": {"model": "gpt-4o", "terms": "openai-terms-of-use"}})])
    result = release_license_verdicts(docs, LicensePolicy(), "commercial")
    assert result.verdicts.height == 1
    assert result.verdicts["rule"][0] == "license.not_in_profile"
    assert "forbid training" in result.verdicts["detail"][0]


def test_unknown_profile_raises_config_error():
    with pytest.raises(ConfigError, match="enterprise"):
        release_license_verdicts(_docs([("a", "MIT", None)]), LicensePolicy(), "enterprise")


def test_policy_forbids_unknown_fields():
    with pytest.raises(ValueError):
        LicensePolicy(profiles={}, typo=1)
    with pytest.raises(ValueError):
        LicenseProfile(allowed_categories=["permissive", "free-ish"])


def test_license_breakdown():
    docs = _docs([("a", "MIT", None), ("b", "MIT", None), ("c", "CC0-1.0", None), ("d", None, None),
                  ("e", "CC-BY-SA-4.0", None)])
    assert license_breakdown(docs) == [
        {"license": "MIT", "documents": 2, "attribution_required": True, "category": "permissive"},
        {"license": "CC-BY-SA-4.0", "documents": 1, "attribution_required": True, "category": "share-alike"},
        {"license": "CC0-1.0", "documents": 1, "attribution_required": False, "category": "public-domain"},
        {"license": None, "documents": 1, "attribution_required": True, "category": "proprietary/unknown"},
    ]
