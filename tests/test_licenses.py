import json

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation_platform.errors import ConfigError
from curation_platform.licenses import (
    SCANCODE_CATEGORIES,
    GeneratorTerms,
    LicensePolicy,
    LicenseProfile,
    attribution_required,
    closest_license,
    license_allowed,
    license_breakdown,
    license_category,
    license_restrictiveness,
    normalize_license,
    platform_category,
    release_license_verdicts,
    scancode_licenses,
)

# Every license id of the bundled ScanCode database (SPDX ids and LicenseRef-scancode-* ids), exceptions apart.
LICENSE_IDS = sorted(e.spdx for e in scancode_licenses().values() if not e.is_exception)


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
        ("public domain", "LicenseRef-scancode-public-domain"),
        ("GNU General Public License v3.0", "GPL-3.0-only"),
        ("Mozilla Public License 2.0", "MPL-2.0"),
        ("GPL-2.0+", "GPL-2.0-or-later"),
        ("LicenseRef-scancode-proprietary-license", "LicenseRef-scancode-proprietary-license"),
        ("licenseref-scancode-public-domain", "LicenseRef-scancode-public-domain"),
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
        ("Apache-2.0 WITH LLVM-exception", "Apache-2.0 WITH LLVM-exception"),
        ("MIT OR LicenseRef-scancode-public-domain", "MIT OR LicenseRef-scancode-public-domain"),
    ],
)
def test_expressions_are_normalized_per_id_with_upper_case_operators(raw, spdx):
    assert _norm([raw]) == [spdx]


@pytest.mark.parametrize(
    "raw",
    ["", "   ", "unknown", "other", "Proprietary - ask legal", "MIT OR", "(MIT", "MIT AND Foo-1.0", "GPL", "BSD",
     "GPL-2.0 WITH No-Such-Exception", "MIT WITH Apache-2.0", "( )", "MIT AND AND MIT", "LicenseRef-Custom", "LicenseRef-scancode-nope", None],
)
def test_unknown_or_unparsable_licenses_give_null(raw):
    assert _norm([raw]) == [None]


def test_normalize_license_keeps_order_and_length():
    values = ["MIT License", None, "apache-2", "MIT License", "nonsense"]
    assert _norm(values) == ["MIT", None, "Apache-2.0", "MIT", None]


def test_every_database_id_normalizes_to_itself():
    # Every SPDX id and every LicenseRef-scancode-* id of the ScanCode database parses, unchanged.
    assert len(LICENSE_IDS) > 2000
    assert {"MIT", "CC-BY-NC-4.0", "LicenseRef-scancode-public-domain"} <= set(LICENSE_IDS)
    assert _norm(LICENSE_IDS) == LICENSE_IDS


def test_every_scancode_key_parses_as_a_license_ref():
    refs = [f"LicenseRef-scancode-{e.key}" for e in scancode_licenses().values() if not e.is_exception]
    normalized = _norm(refs)
    assert None not in normalized
    assert _norm(["LicenseRef-scancode-apache-2.0", "LicenseRef-scancode-gpl-2.0-plus"]) == [
        "Apache-2.0", "GPL-2.0-or-later"]


def test_every_scancode_category_is_mapped():
    # A database update with a new category must be mapped on purpose, not fall through silently.
    assert {e.scancode_category for e in scancode_licenses().values()} <= set(SCANCODE_CATEGORIES)


def test_non_commercial_and_no_derivative_licenses_from_the_database():
    by_key = {e.key: e for e in scancode_licenses().values()}
    cc_nc = [e for key, e in by_key.items() if key.startswith("cc-by-nc-")]
    assert len(cc_nc) >= 20
    for entry in cc_nc:
        assert platform_category(entry) in ("non-commercial", "no-derivatives"), entry.key
    assert platform_category(by_key["cc-by-nc-sa-4.0"]) == "non-commercial"
    assert platform_category(by_key["cc-by-nc-nd-4.0"]) == "no-derivatives"
    assert platform_category(by_key["polyform-noncommercial-1.0.0"]) == "non-commercial"
    assert platform_category(by_key["cc-by-sa-3.0"]) == "share-alike"
    assert license_category("LicenseRef-scancode-proprietary-license") == "proprietary/unknown"  # Commercial
    assert license_category("BUSL-1.1") == "proprietary/unknown"  # Source-available


def test_license_restrictiveness_ranks_categories():
    values = pl.Series(["CC0-1.0", "MIT", "CC-BY-SA-4.0", "CC-BY-NC-4.0", "MIT OR GPL-3.0-only", "junk", None])
    assert license_restrictiveness(values).to_list() == [0, 1, 3, 5, 1, 7, 7]


def test_closest_license_names_a_known_id():
    values = pl.Series(["Apache-2", "CC-BY-NC-4", "Proprietary - ask legal", None])
    assert closest_license(values).to_list() == [
        "Apache-2.0", "CC-BY-NC-4.0", "LicenseRef-scancode-proprietary-license", None]


_ids = st.sampled_from(LICENSE_IDS)
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
    assert license_category("LicenseRef-scancode-public-domain") == "public-domain"
    assert license_category("GPL-2.0-only WITH Classpath-exception-2.0") == "copyleft"
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
        generator_terms={"custom-ok": GeneratorTerms(meaning="test", forbids_training=False),
                         "apache-2.0": GeneratorTerms(meaning="test", forbids_training=False),
                         "mit": GeneratorTerms(meaning="test", forbids_training=False)},
    )
    result = release_license_verdicts(docs, policy, "strict")
    assert result.kept["doc_id"].to_list() == ["s2", "h1"]
    details = dict(zip(result.verdicts["doc_id"], result.verdicts["detail"]))
    assert "excluded" in details["s1"]
    assert "terms mit not allowed" in details["s3"]


def test_generator_terms_outside_the_vocabulary_are_not_shipped():
    docs = _docs([("s1", "MIT", {"generator": {"model": "m", "terms": "no-training-other-models"}}),
                  ("s2", "MIT", {"generator": {"model": "m", "terms": "Unrestricted Outputs"}})])
    result = release_license_verdicts(docs, LicensePolicy(), "commercial")
    assert result.kept["doc_id"].to_list() == ["s2"]
    assert "not in the vocabulary" in result.verdicts["detail"][0]


def test_policy_vocabulary_lists_terms_forbidding_training():
    policy = LicensePolicy()
    assert "no-training-of-competing-models" in policy.generators_forbidding_training
    assert "unrestricted-outputs" not in policy.generators_forbidding_training
    assert policy.unknown_generator_terms("OpenAI Terms of Use") is None
    message = policy.unknown_generator_terms("no-training-other-models")
    assert "no-training-other-models" in message and "no-training-of-competing-models" in message


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


@pytest.mark.parametrize("spdx", ["0BSD", "MIT-0", "Unlicense", "CC0-1.0", "0BSD OR GPL-3.0-only"])
def test_licenses_written_to_waive_the_notice_need_no_attribution(spdx):
    assert attribution_required(spdx) is False


@pytest.mark.parametrize("spdx", ["MIT", "BSD-3-Clause", "CC-BY-4.0", "0BSD AND MIT"])
def test_notice_licenses_need_attribution(spdx):
    assert attribution_required(spdx) is True
