import pytest

from curation_platform.config import CurationConfig, load_config
from curation_platform.errors import ConfigError
from tests.conftest import REPO


def test_bundled_configuration_is_valid_and_keeps_reference_defaults():
    cfg = load_config(REPO / "curation.yaml")
    defaults = CurationConfig()
    assert cfg.near_dedup == defaults.near_dedup
    assert cfg.filters.rules() == defaults.filters.rules()
    assert cfg.decontamination == defaults.decontamination
    assert cfg.language.allowed_languages == ["en"] and cfg.language.min_score == 0.65


def test_unknown_or_invalid_fields_name_the_file_and_field(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("near_dedup:\n  bands: many\nrelese: {}\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert str(bad) in str(err.value) and "near_dedup.bands" in str(err.value) and "relese" in str(err.value)


def test_config_hash_changes_with_any_threshold():
    a = CurationConfig()
    b = CurationConfig.model_validate({"filters": {"thresholds": {"gopher_quality.min_words": 60}}})
    assert a.hash != b.hash and a.hash == CurationConfig().hash


def test_release_settings_do_not_make_curated_drops_stale():
    base = CurationConfig()
    research = CurationConfig.model_validate({"release": {"profile": "research", "name": "r"}})
    stricter = CurationConfig.model_validate({"near_dedup": {"verify_threshold": 0.9}})
    assert research.drop_stages_hash == base.drop_stages_hash and research.hash != base.hash
    assert stricter.drop_stages_hash != base.drop_stages_hash


def test_filter_profiles_edit_the_default_rules_and_sources_must_name_one(tmp_path):
    cfg = load_config(REPO / "curation.yaml")
    default = {r.name: r for r in cfg.filters.rules()}
    short = {r.name: r for r in cfg.filters.rules("short-form")}
    assert default["gopher_quality.min_words"].threshold == 50 and short["gopher_quality.min_words"].threshold == 3
    assert default["fineweb.short_line_ratio"].enabled and not short["fineweb.short_line_ratio"].enabled
    assert cfg.filters.profile_for("team-notes", "short-form") == "short-form"
    assert cfg.filters.profile_for("team-notes") is None
    bad = tmp_path / "c.yaml"
    bad.write_text("filters:\n  sources: {team-notes: tiny}\n")
    with pytest.raises(ConfigError, match="unknown profile"):
        load_config(bad)


def test_a_section_given_twice_is_an_error_not_a_silent_override(tmp_path):
    # The bundled curation.yaml once had two `engine:` sections; YAML kept only the second, so edits to the first
    # did nothing. Loading must refuse it and name the lines.
    path = tmp_path / "curation.yaml"
    path.write_text("engine:\n  batch_rows: 10\ningest:\n  min_text_chars: 1\nengine:\n  batch_rows: 20\n")
    with pytest.raises(ConfigError, match=r"'engine' on line 5 repeats line 1"):
        load_config(path)
