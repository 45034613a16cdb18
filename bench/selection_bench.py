"""Release selection at scale: split by duplicate cluster, quotas, mixture with epochs, budget and synthetic caps
over N candidate documents' metadata (no text, as the release reads it), and the shard plan.

    .venv/bin/python bench/selection_bench.py --docs 1000000

Prints wall time and peak RSS per step. Documents are random metadata: 5 sources over 4 domains, 10% synthetic,
token counts drawn from a log-normal (median ~700), and N/20 verified near pairs.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import polars as pl

from curation_platform.config import CurationConfig
from curation_platform.selection import select, shard_plan, split_assignment


def _corpus(n: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    sources = np.array(["web-crawl", "forum", "code-repo", "chat-logs", "synth"])
    kinds = {"web-crawl": "web", "forum": "text", "code-repo": "code", "chat-logs": "chat", "synth": "web"}
    pick = rng.choice(len(sources), n, p=[0.55, 0.15, 0.1, 0.1, 0.1])
    source = sources[pick]
    ids = pl.Series("doc_id", [f"{i:012x}" for i in range(n)])
    docs = pl.DataFrame({
        "doc_id": ids, "source": source, "kind": [kinds[s] for s in source],
        "license": np.where(pick == 2, "Apache-2.0", "MIT"), "language": np.where(rng.random(n) < 0.9, "en", "de"),
        "quality_score": rng.random(n), "token_count": rng.lognormal(6.5, 0.8, n).astype(np.int64),
        "provenance": np.where(pick == 4, '{"generator": {"model": "m", "terms": "mit"}}', "{}"),
        "content_hash": ids, "drop": np.char.add("d", (np.arange(n) * 10 // n).astype(str)),
        "drop_order": (np.arange(n) * 10 // n).astype(np.int64),
    })
    a, b = rng.integers(0, n, n // 20), rng.integers(0, n, n // 20)
    pairs = pl.DataFrame({"doc_id": ids.gather(a), "duplicate_of": ids.gather(b), "value": np.full(n // 20, 0.85)})
    return docs, pairs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    docs, pairs = _corpus(args.docs, args.seed)
    total = int(docs["token_count"].sum())
    cfg = CurationConfig.model_validate({"release": {
        "domains": {"code": {"kind": ["code"]}, "chat": {"kind": ["chat"]},
                    "web-en": {"kind": ["web", "text"], "language": ["en"]}},
        "default_domain": "other", "token_budget": total // 2,
        "mixture": {"web-en": 0.6, "code": 0.25, "chat": 0.1, "other": 0.05}, "source_max_epochs": {"code-repo": 4},
        "quotas": {"source": {"forum": {"max_share": 0.1}}}, "synthetic_cap": {"overall": 0.1},
        "validation_fraction": 0.01, "curriculum": None}})
    timings = {}
    start = time.perf_counter()
    splits = split_assignment(docs, pairs, cfg.release.validation_fraction, cfg.release.seed)
    timings["split_assignment_s"] = round(time.perf_counter() - start, 2)
    start = time.perf_counter()
    chosen = select(docs, cfg, splits)
    timings["select_s"] = round(time.perf_counter() - start, 2)
    start = time.perf_counter()
    plan = shard_plan(chosen.units, cfg.release)
    timings["shard_plan_s"] = round(time.perf_counter() - start, 2)
    print(json.dumps({
        "documents": args.docs, "available_tokens": total, "selected_units": chosen.units.height,
        "selected_tokens": int(chosen.units["token_count"].sum()), "left_out": chosen.verdicts.height,
        "shards": plan["shard"].n_unique(), **timings,
        "docs_per_s_total": round(args.docs / sum(timings.values())),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }, indent=2))


if __name__ == "__main__":
    main()
