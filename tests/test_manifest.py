"""Tests for curation_platform/manifest.py: loading, clear errors, readiness and fingerprints."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from curation_platform.errors import ManifestError
from curation_platform.manifest import Manifest, drop_is_ready, load_manifest, manifest_fingerprint

VALID = {
    "source": "example-web",
    "kind": "web",
    "license": "CC-BY-4.0",
    "provenance": {"url": "https://example.org/crawl", "collected_at": "2024-05-01", "crawler": "wget 1.21"},
}


def write_drop(tmp_path: Path, manifest: dict | str | None, name: str = "drop-2024-05") -> Path:
    drop = tmp_path / name
    drop.mkdir()
    if manifest is not None:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        (drop / "manifest.yaml").write_text(text, encoding="utf-8")
    return drop


def load_error(drop: Path) -> str:
    with pytest.raises(ManifestError) as caught:
        load_manifest(drop)
    return str(caught.value)


def test_valid_manifest_loads_with_defaults(tmp_path):
    manifest = load_manifest(write_drop(tmp_path, VALID))
    assert manifest.source == "example-web"
    assert manifest.kind == "web"
    assert manifest.license == "CC-BY-4.0"
    assert manifest.provenance["crawler"] == "wget 1.21"  # extra provenance keys are kept verbatim
    assert (manifest.text_field, manifest.id_field) == ("text", "id")
    assert manifest.language is None and manifest.format is None and manifest.generator is None
    assert not manifest.per_record_license


def test_full_manifest_with_generator_and_per_record_license(tmp_path):
    manifest = load_manifest(write_drop(tmp_path, {
        **VALID,
        "kind": "synthetic",
        "license": "per-record",
        "license_field": "lic",
        "text_field": "body",
        "id_field": "uid",
        "language": "de",
        "format": "jsonl",
        "generator": {"model": "example-7b", "terms": "https://example.org/terms"},
    }))
    assert manifest.per_record_license and manifest.license_field == "lic"
    assert manifest.generator is not None and manifest.generator.model == "example-7b"
    assert (manifest.text_field, manifest.id_field) == ("body", "uid")
    assert (manifest.language, manifest.format) == ("de", "jsonl")


def test_missing_manifest_names_drop_and_file(tmp_path):
    drop = write_drop(tmp_path, None)
    message = load_error(drop)
    assert "drop 'drop-2024-05'" in message
    assert str(drop / "manifest.yaml") in message
    assert "missing" in message


def test_unparsable_yaml_is_one_clear_error(tmp_path):
    drop = write_drop(tmp_path, "source: x\nkind: [web\n")
    message = load_error(drop)
    assert "drop 'drop-2024-05'" in message and "manifest.yaml" in message
    assert "not valid YAML" in message
    assert "Traceback" not in message


def test_manifest_that_is_not_a_mapping(tmp_path):
    message = load_error(write_drop(tmp_path, "- just\n- a list\n"))
    assert "must be a YAML mapping" in message


@pytest.mark.parametrize("field", ["source", "kind", "license", "provenance"])
def test_each_required_field_missing(tmp_path, field):
    manifest = {key: value for key, value in VALID.items() if key != field}
    drop = write_drop(tmp_path, manifest)
    message = load_error(drop)
    assert f"field '{field}' is missing" in message
    assert "drop 'drop-2024-05'" in message and str(drop / "manifest.yaml") in message
    assert f"`{field}:" in message  # says what to add


def test_invalid_kind_lists_the_choices(tmp_path):
    message = load_error(write_drop(tmp_path, {**VALID, "kind": "video"}))
    assert "field 'kind' is invalid" in message
    assert "'video'" in message
    assert "web, code, chat, text, synthetic" in message


def test_provenance_needs_url_or_description(tmp_path):
    message = load_error(write_drop(tmp_path, {**VALID, "provenance": {"collected_at": "2024-05-01"}}))
    assert "field 'provenance' is invalid" in message
    assert "'url' or 'description'" in message
    # A description alone is enough.
    manifest = load_manifest(write_drop(tmp_path, {**VALID, "provenance": {"description": "scanned books"}}, "b"))
    assert manifest.provenance == {"description": "scanned books"}


def test_provenance_must_be_a_mapping(tmp_path):
    message = load_error(write_drop(tmp_path, {**VALID, "provenance": "https://example.org"}))
    assert "field 'provenance' is invalid" in message


def test_per_record_license_needs_its_field(tmp_path):
    message = load_error(write_drop(tmp_path, {**VALID, "license": "per-record"}))
    assert "license_field" in message and "drop 'drop-2024-05'" in message


def test_license_field_without_per_record(tmp_path):
    message = load_error(write_drop(tmp_path, {**VALID, "license_field": "lic"}))
    assert "license: per-record" in message


def test_unknown_field_is_rejected_by_name(tmp_path):
    message = load_error(write_drop(tmp_path, {**VALID, "text_feild": "body"}))
    assert "field 'text_feild' is not a manifest field" in message


def test_invalid_format(tmp_path):
    message = load_error(write_drop(tmp_path, {**VALID, "format": "xlsx"}))
    assert "field 'format' is invalid" in message


def test_empty_source_is_invalid(tmp_path):
    message = load_error(write_drop(tmp_path, {**VALID, "source": "  "}))
    assert "field 'source' is invalid" in message


def test_manifest_model_forbids_extra_fields():
    with pytest.raises(ValueError):
        Manifest.model_validate({**VALID, "surprise": 1})


def test_yaml_dates_in_provenance_survive(tmp_path):
    text = "source: s\nkind: text\nlicense: MIT\nprovenance:\n  url: x\n  collected_at: 2024-05-01\n"
    drop = write_drop(tmp_path, text)
    manifest = load_manifest(drop)
    assert str(manifest.provenance["collected_at"]) == "2024-05-01"


# --- readiness -------------------------------------------------------------------------------------------------


def set_mtime(path: Path, when: float) -> None:
    os.utime(path, (when, when), follow_symlinks=False)


def settled_drop(tmp_path: Path, when: float) -> Path:
    drop = write_drop(tmp_path, VALID)
    (drop / "part-0.jsonl").write_text('{"text": "hello"}\n')
    for path in (drop / "manifest.yaml", drop / "part-0.jsonl", drop):
        set_mtime(path, when)
    return drop


def test_not_ready_without_manifest(tmp_path):
    drop = write_drop(tmp_path, None)
    (drop / "_READY").touch()
    assert not drop_is_ready(drop, settle_seconds=0, now=10**10)


def test_ready_after_settle_time_and_not_before(tmp_path):
    drop = settled_drop(tmp_path, 1_000_000.0)
    assert not drop_is_ready(drop, settle_seconds=10, now=1_000_009.0)
    assert drop_is_ready(drop, settle_seconds=10, now=1_000_010.0)


def test_a_recently_changed_file_delays_readiness(tmp_path):
    drop = settled_drop(tmp_path, 1_000_000.0)
    nested = drop / "more"
    nested.mkdir()
    (nested / "part-1.jsonl").write_text("{}\n")
    set_mtime(nested / "part-1.jsonl", 1_000_050.0)
    set_mtime(nested, 1_000_000.0)
    set_mtime(drop, 1_000_000.0)
    assert not drop_is_ready(drop, settle_seconds=10, now=1_000_055.0)
    assert drop_is_ready(drop, settle_seconds=10, now=1_000_060.0)


def test_hidden_temporary_files_count_for_readiness(tmp_path):
    drop = settled_drop(tmp_path, 1_000_000.0)
    (drop / ".part-1.jsonl.tmp").write_text("{")  # rsync-style temporary file being written
    set_mtime(drop / ".part-1.jsonl.tmp", 1_000_100.0)
    set_mtime(drop, 1_000_000.0)
    assert not drop_is_ready(drop, settle_seconds=10, now=1_000_105.0)


def test_ready_marker_skips_the_settle_time(tmp_path):
    drop = settled_drop(tmp_path, 1_000_000.0)
    assert not drop_is_ready(drop, settle_seconds=10, now=1_000_001.0)
    (drop / "_READY").touch()
    assert drop_is_ready(drop, settle_seconds=10, now=1_000_001.0)


# --- fingerprint -----------------------------------------------------------------------------------------------


def test_fingerprint_is_stable_and_tracks_changes(tmp_path):
    drop = settled_drop(tmp_path, 1_000_000.0)
    first = manifest_fingerprint(drop)
    assert first == manifest_fingerprint(drop)
    assert len(first) == 32 and int(first, 16) >= 0

    # Hidden files and the _READY marker are not part of the drop's content.
    (drop / ".DS_Store").write_text("x")
    (drop / "_READY").touch()
    assert manifest_fingerprint(drop) == first

    set_mtime(drop / "part-0.jsonl", 1_000_001.0)
    touched = manifest_fingerprint(drop)
    assert touched != first

    (drop / "part-0.jsonl").write_text('{"text": "hello!"}\n')
    set_mtime(drop / "part-0.jsonl", 1_000_001.0)
    assert manifest_fingerprint(drop) != touched  # same mtime, different size

    (drop / "part-1.jsonl").write_text("")
    assert manifest_fingerprint(drop) not in {first, touched}


def test_fingerprint_does_not_depend_on_the_drop_location(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = settled_drop(tmp_path / "a", 1_000_000.0)
    b = settled_drop(tmp_path / "b", 1_000_000.0)
    assert manifest_fingerprint(a) == manifest_fingerprint(b)
    assert json.dumps(manifest_fingerprint(a))  # a plain string, JSON-able for sensor cursors


# --- generator terms vocabulary --------------------------------------------------------------------------------

SYNTHETIC = {**VALID, "kind": "synthetic", "generator": {"model": "example-instruct-70b",
                                                          "terms": "no-training-other-models"}}


def test_unknown_generator_terms_reject_the_drop_naming_the_known_terms(tmp_path):
    from curation_platform.config import load_config
    from tests.conftest import REPO

    policy = load_config(REPO / "curation.yaml").licenses
    with pytest.raises(ManifestError) as caught:
        load_manifest(write_drop(tmp_path, SYNTHETIC), policy)
    message = str(caught.value)
    assert "drop-2024-05" in message and "generator.terms" in message and "'no-training-other-models'" in message
    assert "no-training-of-competing-models" in message and "openai-terms-of-use" in message
    # Labels compare case- and separator-insensitively.
    known = {**SYNTHETIC, "generator": {"model": "m", "terms": "OpenAI Terms of Use"}}
    assert load_manifest(write_drop(tmp_path, known, "known"), policy).generator.terms == "OpenAI Terms of Use"


def test_ingest_rejects_a_synthetic_drop_with_unknown_terms(tmp_path):
    # The case: the README's own example terms were released because unknown terms passed silently.
    from curation_platform.config import CurationConfig
    from curation_platform.pipeline import run_stage
    from curation_platform.workspace import Workspace

    drop = write_drop(tmp_path, SYNTHETIC, "synthetic-drop")
    (drop / "data.jsonl").write_text(json.dumps({"id": "1", "text": "A generated paragraph."}) + "\n")
    ws = Workspace(tmp_path / "ws")
    ws.register_drop("synthetic-drop", drop)
    with pytest.raises(ManifestError, match="not in the vocabulary; known terms: no-training-of-competing-models"):
        run_stage(ws, CurationConfig(), "raw_documents", "synthetic-drop")
    assert not ws.stage_path("raw_documents", "synthetic-drop").exists()


def test_readme_example_manifest_uses_known_generator_terms(tmp_path):
    import re

    from curation_platform.config import load_config
    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    example = re.search(r"## Data drops.*?```yaml\n(.*?)```", readme, re.S).group(1)
    terms = yaml.safe_load(example)["generator"]["terms"]
    vocabulary = load_config(REPO / "curation.yaml").licenses
    assert vocabulary.unknown_generator_terms(terms) is None, terms


def test_landing_scan_rejects_a_drop_with_unknown_terms(tmp_path):
    from curation_platform.config import CurationConfig
    from curation_platform.landing import scan_landing

    write_drop(tmp_path, SYNTHETIC, "synthetic-drop")
    (tmp_path / "synthetic-drop" / "_READY").write_bytes(b"")
    scan = scan_landing(tmp_path, 0, CurationConfig().licenses)
    assert scan.ready == [] and [name for name, _ in scan.rejected] == ["synthetic-drop"]
    assert "known terms: no-training-of-competing-models" in scan.rejected[0][1]


def test_a_key_given_twice_is_an_error_naming_both_lines(tmp_path):
    # YAML itself lets the second `license:` silently replace the first: a drop could ship under the wrong license.
    text = "source: news\nkind: web\nlicense: CC-BY-4.0\nprovenance: {url: https://example.org}\nlicense: LicenseRef-proprietary\n"
    message = load_error(write_drop(tmp_path, text))
    assert "not valid YAML" in message and "'license' on line 5 repeats line 3" in message
