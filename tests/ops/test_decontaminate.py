import gzip
import json

import polars as pl
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from curation_platform.errors import ConfigError
from curation_platform.ops.decontaminate import (
    BenchmarkSpec,
    DecontaminationConfig,
    benchmark_ngram_index,
    decontaminate,
    load_benchmarks,
    overlap_count,
)
from curation_platform.records import MESSAGES_DTYPE, VERDICT_SCHEMA

APACHE_HEADER = """# Copyright 2024 The Example Authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""

UNRELATED_CODE = APACHE_HEADER + '''
import logging

logger = logging.getLogger(__name__)


class Accumulator:
    """Collect numbers and report their running total."""

    def __init__(self):
        self.values = []

    def add(self, value):
        self.values.append(value)
        return self

    def total(self):
        result = 0
        for value in self.values:
            result += value
        return result


def parse_numbers(text):
    result = []
    for token in text.split(","):
        token = token.strip()
        if token:
            result.append(float(token))
    return result
'''

UNRELATED_PROSE = (
    "The quarterly report shows that revenue grew in every region. For i in range of options, the committee "
    "chose the simplest one and will return a result next week. Permission is hereby granted, free of charge, "
    "to any person obtaining a copy of this software, to deal in the Software without restriction."
)


@pytest.fixture(scope="module")
def cfg() -> DecontaminationConfig:
    return DecontaminationConfig()


@pytest.fixture(scope="module")
def humaneval(cfg) -> pl.DataFrame:
    return load_benchmarks(cfg)


@pytest.fixture(scope="module")
def index(humaneval, cfg) -> pl.DataFrame:
    return benchmark_ngram_index(humaneval, cfg)


def _item(humaneval: pl.DataFrame, task_id: str) -> str:
    return humaneval.filter(pl.col("item_id") == task_id)["text"][0]


def _docs(texts: dict[str, str], kind: str = "code") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "doc_id": list(texts),
            "source": ["github"] * len(texts),
            "kind": [kind] * len(texts),
            "text": list(texts.values()),
            "messages": pl.Series([None] * len(texts), dtype=MESSAGES_DTYPE),
            "license": ["MIT"] * len(texts),
        }
    )


# ---------------------------------------------------------------------------------------------------------------
# Loading and indexing


def test_default_config_loads_bundled_humaneval(humaneval):
    assert humaneval.columns == ["benchmark", "item_id", "text"]
    assert humaneval.height == 164
    assert humaneval["benchmark"].unique().to_list() == ["humaneval"]
    first = _item(humaneval, "HumanEval/0")
    # Prompt and canonical solution, in that order.
    assert "def has_close_elements" in first
    assert first.index("def has_close_elements") < first.index("for idx, elem in enumerate(numbers)")


def test_missing_benchmark_file_raises_config_error_naming_it(tmp_path):
    cfg = DecontaminationConfig(
        benchmarks=[BenchmarkSpec(name="mine", path=str(tmp_path / "nope.jsonl"), text_fields=["q"])]
    )
    with pytest.raises(ConfigError, match="nope.jsonl"):
        load_benchmarks(cfg)
    cfg = DecontaminationConfig(
        benchmarks=[BenchmarkSpec(name="mine", path="pkg://no_such_package_xyz/data.jsonl", text_fields=["q"])]
    )
    with pytest.raises(ConfigError, match="no_such_package_xyz"):
        load_benchmarks(cfg)


def test_missing_benchmark_field_raises_config_error_naming_it(tmp_path):
    path = tmp_path / "bench.jsonl"
    path.write_text(json.dumps({"id": 1, "question": "q"}) + "\n")
    cfg = DecontaminationConfig(
        benchmarks=[BenchmarkSpec(name="mine", path=str(path), text_fields=["question", "answer"], id_field="id")]
    )
    with pytest.raises(ConfigError, match="answer"):
        load_benchmarks(cfg)
    cfg = DecontaminationConfig(
        benchmarks=[BenchmarkSpec(name="mine", path=str(path), text_fields=["question"], id_field="uid")]
    )
    with pytest.raises(ConfigError, match="uid"):
        load_benchmarks(cfg)


def test_config_forbids_unknown_fields():
    with pytest.raises(ValueError):
        DecontaminationConfig(ngram_size=13)


def test_index_hashes_normalized_ngrams_with_xxh3_64():
    words = [f"w{i}" for i in range(15)]
    bench = pl.DataFrame({"benchmark": ["b"], "item_id": ["1"], "text": ["  ".join(words).upper() + "!"]})
    index = benchmark_ngram_index(bench, DecontaminationConfig())
    assert index.schema["ngram_hash"] == pl.UInt64
    # 15 words give 15 - 13 + 1 = 3 thirteen-word n-grams, hashed as the lowercase words joined by one space.
    expected = sorted(xxhash.xxh3_64_intdigest(" ".join(words[i : i + 13]).encode()) for i in range(3))
    assert sorted(index["ngram_hash"].to_list()) == expected
    assert index["ngram_size"].to_list() == [13, 13, 13]


def test_short_items_use_their_whole_length_down_to_min_ngram():
    bench = pl.DataFrame(
        {
            "benchmark": ["b"] * 4,
            "item_id": ["eight", "seven", "twelve", "thirteen"],
            "text": [
                " ".join(f"a{i}" for i in range(8)),
                " ".join(f"b{i}" for i in range(7)),
                " ".join(f"c{i}" for i in range(12)),
                " ".join(f"d{i}" for i in range(13)),
            ],
        }
    )
    index = benchmark_ngram_index(bench, DecontaminationConfig(ngram=13, min_ngram=8))
    sizes = dict(zip(index["item_id"], index["ngram_size"]))
    assert sizes == {"eight": 8, "twelve": 12, "thirteen": 13}  # seven words: below min_ngram, skipped
    assert index.height == 3

    docs = _docs({"x": "Intro: " + " ".join(f"a{i}" for i in range(8)) + ".", "y": " ".join(f"b{i}" for i in range(7))})
    result = decontaminate(docs, index, DecontaminationConfig())
    assert result.verdicts["doc_id"].to_list() == ["x"]


def test_user_supplied_jsonl_gz_and_parquet_benchmarks(tmp_path):
    rows = [
        {"question": "What is the capital city of the small landlocked country that borders both France and Spain?",
         "answer": "Andorra la Vella"},
        {"question": "Name the chemical element whose atomic number is exactly seventy nine and symbol Au.",
         "answer": "Gold"},
    ]
    plain = tmp_path / "trivia.jsonl"
    plain.write_text("".join(json.dumps(r) + "\n" for r in rows))
    packed = tmp_path / "trivia2.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    parquet = tmp_path / "trivia3.parquet"
    pl.DataFrame(rows).with_row_index("qid").write_parquet(parquet)
    cfg = DecontaminationConfig(
        benchmarks=[
            BenchmarkSpec(name="trivia", path=str(plain), text_fields=["question", "answer"]),
            BenchmarkSpec(name="trivia_gz", path=str(packed), text_fields=["question"]),
            BenchmarkSpec(name="trivia_pq", path=str(parquet), text_fields=["question"], id_field="qid"),
        ]
    )
    bench = load_benchmarks(cfg)
    assert bench.height == 6
    assert bench.filter(pl.col("benchmark") == "trivia")["item_id"].to_list() == ["0", "1"]
    assert bench["text"][0].endswith("France and Spain?\n\nAndorra la Vella")
    index = benchmark_ngram_index(bench, cfg)

    docs = _docs(
        {
            "leak": "Quiz night! Name the chemical element whose atomic number is exactly seventy-nine, and symbol "
            "AU? Answer: gold.",
            "clean": UNRELATED_PROSE,
        },
        kind="web",
    )
    result = decontaminate(docs, index, cfg)
    assert result.kept["doc_id"].to_list() == ["clean"]
    verdict = result.verdicts.row(0, named=True)
    # All three benchmarks hold the question; the one with the most shared n-grams decides, ties by name.
    assert verdict["rule"] == "decontamination.trivia"
    assert "trivia_gz item(s) 1" in verdict["detail"] and "trivia_pq item(s) 1" in verdict["detail"]
    assert result.metrics["contaminated_documents_per_benchmark"] == {"trivia": 1, "trivia_gz": 1, "trivia_pq": 1}
    assert result.metrics["contaminated_items_per_benchmark"] == {"trivia": 1, "trivia_gz": 1, "trivia_pq": 1}


# ---------------------------------------------------------------------------------------------------------------
# Drop mode


def test_humaneval_planted_verbatim_in_code_document_is_dropped(humaneval, index, cfg):
    leak = UNRELATED_CODE + "\n\n" + _item(humaneval, "HumanEval/0") + "\n\nif __name__ == '__main__':\n    main()\n"
    docs = _docs({"leak": leak, "clean": UNRELATED_CODE})
    result = decontaminate(docs, index, cfg)
    assert result.kept["doc_id"].to_list() == ["clean"]
    assert result.kept.columns == docs.columns
    verdict = result.verdicts.row(0, named=True)
    assert verdict["doc_id"] == "leak"
    assert verdict["verdict"] == "drop"
    assert verdict["rule"] == "decontamination.humaneval"
    assert verdict["threshold"] == "> 0"
    assert "HumanEval/0" in verdict["detail"] and "humaneval" in verdict["detail"]
    # Every 13-word window of the item is shared.
    item_ngrams = index.filter(pl.col("item_id") == "HumanEval/0")["ngram_hash"].n_unique()
    assert verdict["value"] == item_ngrams
    assert result.verdicts.schema == pl.Schema(VERDICT_SCHEMA)
    assert result.metrics["contaminated_documents_per_benchmark"] == {"humaneval": 1}
    # HumanEval/20 ("find the closest elements") repeats three 13-grams of HumanEval/0's docstring.
    assert result.metrics["contaminated_items_per_benchmark"] == {"humaneval": 2}
    assert "HumanEval/0, HumanEval/20" in verdict["detail"]
    assert result.metrics["dropped_documents"] == 1


def test_reformatted_humaneval_item_is_still_caught(humaneval, index, cfg):
    original = _item(humaneval, "HumanEval/12")
    reformatted = (
        original.upper()
        .replace("    ", "\t")
        .replace("(", " ( ")
        .replace(",", " ,")
        .replace(":", ";")
        .replace("\n", "\r\n\r\n")
    )
    docs = _docs({"reformatted": reformatted, "clean": UNRELATED_CODE})
    result = decontaminate(docs, index, cfg)
    assert result.verdicts["doc_id"].to_list() == ["reformatted"]
    assert "HumanEval/12" in result.verdicts["detail"][0]


def test_one_paragraph_inside_a_longer_document_is_caught(humaneval, index, cfg):
    item = _item(humaneval, "HumanEval/0")
    docstring = item[item.index('"""') + 3 : item.index(">>>")]  # the task description only, 30 words
    assert len(docstring.split()) >= 13
    page = (
        UNRELATED_PROSE + "\n\nToday's exercise:\n" + " ".join(docstring.split()) + "\n\n" + UNRELATED_PROSE * 5
    )
    docs = _docs({"page": page, "clean": UNRELATED_PROSE}, kind="web")
    result = decontaminate(docs, index, cfg)
    assert result.verdicts["doc_id"].to_list() == ["page"]


def test_twelve_shared_words_are_not_enough_thirteen_are():
    words = [f"tok{i}" for i in range(30)]
    bench = pl.DataFrame({"benchmark": ["b"], "item_id": ["q"], "text": [" ".join(words)]})
    cfg = DecontaminationConfig()
    index = benchmark_ngram_index(bench, cfg)
    docs = _docs(
        {
            "twelve": "unrelated start " + " ".join(words[5:17]) + " unrelated end",
            "thirteen": "unrelated start " + " ".join(words[5:18]) + " unrelated end",
        }
    )
    result = decontaminate(docs, index, cfg)
    assert result.verdicts["doc_id"].to_list() == ["thirteen"]
    assert result.verdicts["value"].to_list() == [1.0]


def test_unrelated_documents_sharing_common_phrases_are_kept(index, cfg):
    docs = _docs(
        {
            "code": UNRELATED_CODE,
            "prose": UNRELATED_PROSE,
            "tiny": "def __init__(self):\n    pass\n\nreturn result\n",
            "empty": "",
            "typing": "from typing import List\n\n\ndef total(numbers: List[float]) -> float:\n    return sum(numbers)\n",
        }
    )
    result = decontaminate(docs, index, cfg)
    assert result.verdicts.is_empty()
    assert result.kept.equals(docs)
    assert result.metrics["contaminated_documents"] == 0


def test_ngrams_common_across_the_corpus_are_ignored(tmp_path):
    # A benchmark that quotes a licence header: the header is boilerplate in the corpus, not a leak.
    path = tmp_path / "bench.jsonl"
    path.write_text(
        json.dumps({"text": APACHE_HEADER + "\nWrite a function that returns the seventh prime number greater than "
                    "a given lower bound using a sieve."}) + "\n"
    )
    def run(n_with_header: int) -> pl.DataFrame:
        cfg = DecontaminationConfig(
            benchmarks=[BenchmarkSpec(name="b", path=str(path), text_fields=["text"])],
            max_corpus_doc_frac=0.0,
            common_ngram_min_docs=3,
        )
        index = benchmark_ngram_index(load_benchmarks(cfg), cfg)
        texts = {f"h{i}": APACHE_HEADER + f"\nprint({i})\n" for i in range(n_with_header)}
        texts["leak"] = "Task: write a function that returns the seventh prime number greater than a given lower bound " \
                        "using a sieve, please."
        return decontaminate(_docs(texts), index, cfg).verdicts

    # The header is in 3 documents: not more than common_ngram_min_docs, so still counted as overlap.
    assert sorted(run(3)["doc_id"].to_list()) == ["h0", "h1", "h2", "leak"]
    # In 4 documents it is too common and ignored; the real leak is still caught.
    assert run(4)["doc_id"].to_list() == ["leak"]


def test_chat_documents_are_scanned_through_their_messages(humaneval, index, cfg):
    item = _item(humaneval, "HumanEval/3")
    docs = pl.DataFrame(
        {
            "doc_id": ["chat"],
            "kind": ["chat"],
            "text": [None],
            "messages": [[{"role": "user", "content": "Solve this:\n" + item}, {"role": "assistant", "content": "ok"}]],
        },
        schema_overrides={"text": pl.String, "messages": MESSAGES_DTYPE},
    )
    assert decontaminate(docs, index, cfg).verdicts["doc_id"].to_list() == ["chat"]
    cut = decontaminate(docs, index, cfg.model_copy(update={"mode": "cut"}))
    assert cut.verdicts["verdict"].to_list() == ["drop"]
    assert "chat record" in cut.verdicts["detail"][0]


# ---------------------------------------------------------------------------------------------------------------
# Cut mode


def test_cut_mode_removes_the_overlapping_lines_and_keeps_the_rest(humaneval, index, cfg):
    cut_cfg = cfg.model_copy(update={"mode": "cut"})
    item = _item(humaneval, "HumanEval/2")
    head = "# notes.py\nprint('first line kept')"
    tail = "print('last line kept')"
    docs = _docs({"partial": head + "\n" + item + "\n" + tail, "full": item, "clean": UNRELATED_CODE})
    result = decontaminate(docs, index, cut_cfg)

    assert result.kept["doc_id"].to_list() == ["partial", "clean"]
    kept_text = result.kept["text"][0]
    assert kept_text.startswith(head) and kept_text.endswith(tail)
    assert "truncate_number" not in kept_text
    assert overlap_count(result.kept["text"], index, cfg).to_list() == [0, 0]
    assert result.kept["text"][1] == UNRELATED_CODE

    verdicts = dict(zip(result.verdicts["doc_id"], result.verdicts.iter_rows(named=True)))
    assert verdicts["partial"]["verdict"] == "flag"
    assert verdicts["partial"]["rule"] == "decontamination.humaneval"
    # The item starts with two blank lines, so its first words sit on line 5 of the document (1-based).
    first_word_line = (head + "\n" + item).split("\n").index("def truncate_number(number: float) -> float:") + 1
    assert f"cut lines {first_word_line}-" in verdicts["partial"]["detail"]
    assert verdicts["full"]["verdict"] == "drop"
    assert "nothing is left" in verdicts["full"]["detail"]
    assert result.metrics["cut_documents"] == 1 and result.metrics["dropped_documents"] == 1


def test_cut_mode_is_deterministic(humaneval, index, cfg):
    cut_cfg = cfg.model_copy(update={"mode": "cut"})
    texts = {f"d{i}": UNRELATED_CODE + "\n" + _item(humaneval, f"HumanEval/{i}") + "\nprint(1)" for i in range(5)}
    first = decontaminate(_docs(texts), index, cut_cfg)
    second = decontaminate(_docs(texts), index, cut_cfg)
    assert first.kept.equals(second.kept)
    assert first.verdicts.equals(second.verdicts)


# ---------------------------------------------------------------------------------------------------------------
# Release gate


def test_overlap_count_per_text_in_order(humaneval, index, cfg):
    item = _item(humaneval, "HumanEval/5")
    n = index.filter(pl.col("item_id") == "HumanEval/5")["ngram_hash"].n_unique()
    texts = pl.Series("text", [UNRELATED_CODE, item, None, "x " + item.upper()])
    assert overlap_count(texts, index, cfg).to_list() == [0, n, 0, n]


_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=8)
_separator = st.sampled_from([" ", "  ", "\n", "\t", ", ", "(", ") ", ":\n    ", " == ", "!\r\n", "...", " -- "])


@settings(max_examples=60, deadline=None)
@given(st.lists(_word, min_size=13, max_size=40), st.data())
def test_reformatting_never_hides_overlap(words, data):
    """Any case change and any punctuation/whitespace between words keeps every n-gram."""
    bench = pl.DataFrame({"benchmark": ["b"], "item_id": ["i"], "text": [" ".join(words)]})
    cfg = DecontaminationConfig()
    index = benchmark_ngram_index(bench, cfg)
    seps = data.draw(st.lists(_separator, min_size=len(words) - 1, max_size=len(words) - 1))
    upper = data.draw(st.lists(st.booleans(), min_size=len(words), max_size=len(words)))
    cased = [w.upper() if u else w for w, u in zip(words, upper)]
    reformatted = cased[0] + "".join(s + w for s, w in zip(seps, cased[1:]))
    expected = index["ngram_hash"].n_unique()
    assert overlap_count(pl.Series([reformatted]), index, cfg).to_list() == [expected]


def test_cut_mode_rescans_when_cutting_joins_words_into_a_new_overlap():
    first = [f"alpha{i}" for i in range(13)]
    second = [f"beta{i}" for i in range(13)]
    bench = pl.DataFrame({"benchmark": ["b", "b"], "item_id": ["first", "second"],
                          "text": [" ".join(first), " ".join(second)]})
    cfg = DecontaminationConfig(mode="cut")
    index = benchmark_ngram_index(bench, cfg)
    # Cutting the "second" line joins the two halves of "first" into a complete 13-gram: a second pass cuts them.
    lines = ["kept top line", " ".join(first[:6]), " ".join(second), " ".join(first[6:]), "kept bottom line"]
    result = decontaminate(_docs({"d": "\n".join(lines)}), index, cfg)
    assert result.kept["text"].to_list() == ["kept top line\nkept bottom line"]
    assert result.verdicts["verdict"].to_list() == ["flag"]
    assert "cut lines 2-4" in result.verdicts["detail"][0]


def test_an_item_copied_into_many_documents_is_still_caught():
    """A benchmark item vendored into many repositories is frequent, but it is a leak, not boilerplate."""
    import polars as _pl

    from curation_platform.ops.decontaminate import (
        DecontaminationConfig as _Cfg, benchmark_ngram_index as _index, decontaminate as _decon, overlap_count as _ov,
    )

    item = ("def rolling_median(values, window): compute the median of every window of the given size over the "
            "values and return them as a list in order of their last element")
    bench = _pl.DataFrame({"benchmark": ["mybench"], "item_id": ["mybench/0"], "text": [item]})
    cfg = _Cfg(benchmarks=[])
    index = _index(bench, cfg)
    copies = [f"# vendored helper number {i}\n{item}\nprint({i})" for i in range(11)]
    clean = [f"an unrelated note number {i} about gardening and weather in the spring" for i in range(100)]
    docs = _pl.DataFrame({"doc_id": [f"d{i}" for i in range(111)], "text": copies + clean, "kind": ["code"] * 111})
    result = _decon(docs, index, cfg)
    dropped = set(result.verdicts.filter(_pl.col("verdict") == "drop")["doc_id"])
    assert dropped == {f"d{i}" for i in range(11)}
    assert (_ov(docs["text"], index, cfg)[:11] > 0).all()
