"""Every planted outcome of the bundled sample drops (``SAMPLE_EXPECTATIONS``), asserted on what a real
`curate run` RELEASED (the shards) and on the ledger, after the real Dagster graph ran in a temporary git project.

Input records are read back from the landing files with the plain parser of ``tests/test_samples.py`` and matched
to released documents by (drop, source_id), so each check follows a planted record to its outcome. Duplicates are
judged by which copies ship, not by the stage that removed the others, so the checks hold whether dedup or the
release chooses the representative.
"""

from __future__ import annotations

import collections
import re
from pathlib import Path

import polars as pl
import pytest
import yaml

from curation_platform.config import load_config
from curation_platform.ledger import read_ledger
from curation_platform.licenses import license_category, normalize_license
from curation_platform.samples import SAMPLE_EXPECTATIONS
from curation_platform.workspace import Workspace
from tests.conftest import REPO, run_cli
from tests.test_end_to_end import CONFIG
from tests.test_samples import (
    AWS_KEY, CARD, CODE_LANGUAGES, EMAIL, PHONE, jaccard, low_quality_kind, luhn_ok, read_drop, shingles,
)


def _source_id(record: dict) -> str:
    """The source_id the reader gives a record: its id, else file:line for a JSONL line, else the file path."""
    if record["id"] is not None and str(record["id"]).strip():
        return str(record["id"])
    return f"{record['file']}:{record['line']}" if record["line"] is not None else record["file"]


class Outcome:
    """The landing input, the released shards and the exported ledger of one run of the samples."""

    def __init__(self, root: Path):
        self.root = root
        self.ws = Workspace(root / "data")
        self.cfg = load_config(REPO / "curation.yaml")
        self.inputs = {name: read_drop(root / "landing" / name) for name in SAMPLE_EXPECTATIONS["drops"]}
        for name, drop in self.inputs.items():
            for record in drop["records"]:
                record["source_id"] = _source_id(record)
        self.shards = pl.read_parquet(str(root / "data" / "releases" / "latest" / "shards" / "*.parquet"))
        out = root / "outcomes-ledger.parquet"
        code, output = run_cli("ledger", "export", str(out), "--workspace", str(root / "data"), "--config", CONFIG)
        assert code == 0, output
        self.ledger = pl.read_parquet(out)
        self._released = set(zip(self.shards["drop"], self.shards["source_id"]))

    def released(self, drop: str, record: dict) -> bool:
        return (drop, record["source_id"]) in self._released

    def row(self, drop: str, record: dict) -> dict:
        rows = self.ledger.filter((pl.col("drop") == drop) & (pl.col("source_id") == record["source_id"]))
        assert rows.height == 1, (drop, record["source_id"], rows.height)
        return rows.row(0, named=True)

    def quarantined(self, drop: str, reason: str) -> int:
        return self.ledger.filter((pl.col("drop") == drop) & (pl.col("status") == "quarantined")
                                  & pl.col("detail").str.contains(reason, literal=True)).height


@pytest.fixture(scope="module")
def outcome(project):  # the session's run of the samples (tests/conftest.py)
    root, code, output = project
    assert code == 0, output
    return Outcome(root)


def expected(key: str) -> dict:
    return SAMPLE_EXPECTATIONS[key]


def _per_drop(key: str, count) -> None:
    for name in SAMPLE_EXPECTATIONS["drops"]:
        assert count(name) == expected(key).get(name, 0), (key, name)


# --- one check per SAMPLE_EXPECTATIONS entry ---------------------------------------------------------------------


def check_drops(o: Outcome) -> None:
    assert [d.name for d in o.ws.drops()] == expected("drops")


def check_records(o: Outcome) -> None:
    for name, count in expected("records").items():
        assert o.ledger.filter(pl.col("drop") == name).height == count, name
        assert o.inputs[name]["read"] == count, name


def check_malformed_json_lines(o: Outcome) -> None:
    _per_drop("malformed_json_lines", lambda name: o.quarantined(name, "malformed JSON"))


def check_invalid_utf8_lines(o: Outcome) -> None:
    _per_drop("invalid_utf8_lines", lambda name: o.quarantined(name, "invalid UTF-8"))


def check_empty_text_records(o: Outcome) -> None:
    _per_drop("empty_text_records", lambda name: o.quarantined(name, "empty text"))


def check_unknown_license_records(o: Outcome) -> None:
    _per_drop("unknown_license_records", lambda name: o.quarantined(name, "unknown license"))
    rows = o.ledger.filter(pl.col("detail").str.contains("unknown license", literal=True))
    assert rows["detail"].str.contains("closest known id: ", literal=True).all()


def check_unknown_license_strings(o: Outcome) -> None:
    rows = o.ledger.filter((pl.col("status") == "quarantined")
                           & pl.col("detail").str.contains("unknown license", literal=True))
    assert set(rows["license"]) == set(expected("unknown_license_strings"))
    assert not o.shards["license"].is_in(expected("unknown_license_strings")).any()


def _copies_released(o: Outcome, copies: list[tuple[str, dict]]) -> int:
    return sum(o.released(name, record) for name, record in copies)


def check_exact_duplicates_within_drop(o: Outcome) -> None:
    for name, drop in o.inputs.items():
        groups = collections.defaultdict(list)
        for record in drop["records"]:
            if record["text"].strip():
                groups[record["text"]].append((name, record))
        extra = 0
        for copies in groups.values():
            if len(copies) > 1:
                extra += len(copies) - 1
                assert _copies_released(o, copies) == 1, (name, [r["source_id"] for _, r in copies])
        assert extra == expected("exact_duplicates_within_drop").get(name, 0), name
    assert o.shards["text"].n_unique() == o.shards.height  # no text ships twice


def check_exact_duplicates_cross_drop(o: Outcome) -> None:
    earlier: dict[str, list[tuple[str, dict]]] = collections.defaultdict(list)
    for name, drop in o.inputs.items():
        found = 0
        for record in drop["records"]:
            if not record["text"].strip():
                continue
            if record["text"] in earlier:
                found += 1
                copies = [*earlier[record["text"]], (name, record)]
                assert _copies_released(o, copies) == 1, (name, record["source_id"])
        assert found == expected("exact_duplicates_cross_drop").get(name, 0), name
        for record in drop["records"]:
            earlier[record["text"]].append((name, record))


def check_near_duplicates_cross_drop(o: Outcome) -> None:
    earlier: list[tuple[str, dict, set]] = []
    for name, drop in o.inputs.items():
        current = [r for r in drop["records"] if r["text"].strip()]
        texts = {r["text"] for _, r, _ in earlier}
        found = 0
        for record in current:
            if record["text"] in texts:
                continue
            grams = shingles(record["text"])
            near = [(n, r) for n, r, g in earlier if jaccard(grams, g) >= 0.8]
            if near:
                found += 1
                # One copy of the cluster ships: the original or the edited copy, never both, never neither.
                assert _copies_released(o, [*near, (name, record)]) == 1, (name, record["source_id"])
        assert found == expected("near_duplicates_cross_drop").get(name, 0), name
        earlier += [(name, r, shingles(r["text"])) for r in current]


def check_low_quality(o: Outcome) -> None:
    for name, drop in o.inputs.items():
        if drop["manifest"]["kind"] not in {"web", "text", "synthetic"}:
            continue
        kinds = collections.Counter()
        for record in drop["records"]:
            kind = None if record["file"].endswith(".html") else low_quality_kind(record["text"])
            if kind is None:
                continue
            kinds[kind] += 1
            assert not o.released(name, record), (name, record["source_id"])
            row = o.row(name, record)
            assert (row["status"], row["stage"]) == ("dropped", "filtered"), (name, record["source_id"], row)
        assert dict(kinds) == expected("low_quality").get(name, {}), name


def check_non_english(o: Outcome) -> None:
    for name in SAMPLE_EXPECTATIONS["drops"]:
        rows = o.ledger.filter((pl.col("drop") == name) & (pl.col("stage") == "language")
                               & (pl.col("status") == "dropped"))
        languages = collections.Counter(re.match(r"language (\w+) ", d).group(1) for d in rows["detail"])
        assert dict(languages) == expected("non_english").get(name, {}), name
        assert rows["release_shard"].null_count() == rows.height
    prose = o.shards.filter(pl.col("kind") != "code")
    assert set(prose["language"]) == {"en"}


# PII kinds as the sample counts them -> the redaction rule the ledger records.
_PII_RULES = {"email": "pii.email", "phone": "pii.phone", "credit_card": "pii.credit_card", "aws_key": "pii.secret"}
_PLACEHOLDERS = {"pii.email": "<EMAIL>", "pii.phone": "<PHONE>", "pii.credit_card": "<CREDIT_CARD>",
                 "pii.secret": "<SECRET>"}


def _redactions(o: Outcome, name: str) -> pl.DataFrame:
    return read_ledger(o.ws, name).filter((pl.col("stage") == "pii_redacted") & (pl.col("verdict") == "redact"))


def check_pii(o: Outcome) -> None:
    for name in SAMPLE_EXPECTATIONS["drops"]:
        redactions = _redactions(o, name)
        per_rule = dict(redactions.group_by("rule").agg(pl.col("doc_id").n_unique()).iter_rows())
        assert per_rule == {_PII_RULES[k]: v for k, v in expected("pii").get(name, {}).items()}, name
        # The redacted documents ship, with the placeholder instead of the value.
        for doc_id, rule in redactions.select("doc_id", "rule").iter_rows():
            text = o.shards.filter(pl.col("doc_id") == doc_id)["text"]
            assert text.len() == 1 and _PLACEHOLDERS[rule] in text[0], (name, doc_id, rule)
    # Nothing shipped still matches the sample's own PII patterns.
    for text in o.shards["text"]:
        assert not EMAIL.search(text) and not PHONE.search(text) and not AWS_KEY.search(text)
        assert not any(luhn_ok(m) for m in CARD.findall(text))


def check_pii_documents(o: Outcome) -> None:
    _per_drop("pii_documents", lambda name: _redactions(o, name)["doc_id"].n_unique())


def _leaks(o: Outcome, name: str) -> list[tuple[dict, str]]:
    from curation_platform.samples import humaneval_items

    prompts = {task: item["prompt"].strip() for task, item in humaneval_items().items()}
    return [(r, task) for r in o.inputs[name]["records"] for task, prompt in prompts.items() if prompt in r["text"]]


def check_benchmark_leaks(o: Outcome) -> None:
    for name in SAMPLE_EXPECTATIONS["drops"]:
        leaks = _leaks(o, name)
        assert len(leaks) == expected("benchmark_leaks").get(name, 0), name
        for record, _ in leaks:
            assert not o.released(name, record), (name, record["source_id"])
            row = o.row(name, record)
            assert (row["status"], row["stage"]) == ("dropped", "decontaminated"), row


def check_benchmark_leak_items(o: Outcome) -> None:
    for name in SAMPLE_EXPECTATIONS["drops"]:
        items = []
        for record, task in _leaks(o, name):
            assert re.search(rf"{re.escape(task)}\b", o.row(name, record)["detail"]), (name, task)
            items.append(task)
        assert items == expected("benchmark_leak_items").get(name, []), name


def check_nc_documents(o: Outcome) -> None:
    for name, drop in o.inputs.items():
        normalized = normalize_license(pl.Series([r["license"] for r in drop["records"]], dtype=pl.String))
        nc = [r for r, lic in zip(drop["records"], normalized) if lic is not None and "-NC-" in lic]
        assert len(nc) == expected("nc_documents").get(name, 0), name
        for record in nc:
            assert not o.released(name, record)
            row = o.row(name, record)
            assert (row["status"], row["stage"], row["rule"]) == ("dropped", "release", "license.not_in_profile")
    # The release profile is commercial: nothing non-commercial (or worse) ships.
    assert {license_category(lic) for lic in o.shards["license"].unique()} <= {"public-domain", "permissive"}


def check_license_strings(o: Outcome) -> None:
    allowed = o.cfg.licenses.profiles[o.cfg.release.profile].allowed_categories
    for name, strings in expected("license_strings").items():
        records = o.inputs[name]["records"]
        assert dict(collections.Counter(r["license"] for r in records)) == strings, name
        shipped = collections.Counter(r["license"] for r in records if o.released(name, r))
        normalized = dict(zip(strings, normalize_license(pl.Series(list(strings), dtype=pl.String))))
        assert dict(shipped) == {s: n for s, n in strings.items()
                                 if normalized[s] is not None and license_category(normalized[s]) in allowed}, name


def check_html_files(o: Outcome) -> None:
    for name in SAMPLE_EXPECTATIONS["drops"]:
        html = [r for r in o.inputs[name]["records"] if r["file"].endswith(".html")]
        assert len(html) == expected("html_files").get(name, 0), name
        for record in html:
            text = o.shards.filter((pl.col("drop") == name) & (pl.col("source_id") == record["source_id"]))["text"]
            assert text.len() == 1, record["source_id"]  # the page ships, as main-content text
            assert "<p>" not in text[0] and "<nav" not in text[0] and len(text[0].split()) > 50


def check_code_files(o: Outcome) -> None:
    for name in SAMPLE_EXPECTATIONS["drops"]:
        records = [r for r in o.inputs[name]["records"] if Path(r["file"]).suffix in CODE_LANGUAGES]
        languages = collections.Counter(CODE_LANGUAGES[Path(r["file"]).suffix] for r in records)
        assert dict(languages) == expected("code_files").get(name, {}), name
        for record in records:
            row = o.row(name, record)
            if o.released(name, record):
                assert row["language"] == CODE_LANGUAGES[Path(record["file"]).suffix], row
            else:  # removed with a recorded rule (the leaked item, the duplicate file)
                assert row["status"] == "dropped" and row["rule"], row


def check_chat_shapes(o: Outcome) -> None:
    for name in expected("chat_shapes"):
        shipped = o.shards.filter(pl.col("drop") == name)
        assert shipped.height > 0 and set(shipped["kind"]) == {"chat"}, name
        for messages in shipped["messages"]:
            roles = [m["role"] for m in messages]
            assert len(roles) >= 2 and roles[0] == "user" and "assistant" in roles, (name, roles)


def check_synthetic_forbidding_training(o: Outcome) -> None:
    for name, count in expected("synthetic_forbidding_training").items():
        rows = o.ledger.filter(pl.col("drop") == name)
        assert rows.height == count
        assert set(rows.select("status", "stage", "rule").iter_rows()) == {
            ("dropped", "release", "license.generator_terms")}
        assert o.shards.filter(pl.col("drop") == name).is_empty()


def check_forbidding_terms(o: Outcome) -> None:
    terms = expected("forbidding_terms")
    assert o.cfg.licenses.generator_terms[terms].forbids_training
    for name in expected("synthetic_forbidding_training"):
        manifest = yaml.safe_load((o.root / "landing" / name / "manifest.yaml").read_text())
        assert manifest["generator"]["terms"] == terms


CHECKS = {name[len("check_"):]: fn for name, fn in globals().items() if name.startswith("check_")}


def test_every_sample_expectation_has_a_check():
    assert set(CHECKS) == set(SAMPLE_EXPECTATIONS)


@pytest.mark.parametrize("key", sorted(SAMPLE_EXPECTATIONS))
def test_sample_expectation_holds_in_the_release_and_ledger(outcome, key):
    CHECKS[key](outcome)
