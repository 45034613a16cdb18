"""Throughput and peak memory of MinHash near-dedup at scale, processed as an ordered series of drops.

    python bench/dedup_scale.py --docs 1000000 --drops 10 [--out bench/results/dedup_1m.json]
                                [--memory-limit 4GB] [--temp-directory DIR] [--seed 0] [--mean-chars 3600]

1. A child process builds ``synthetic_corpus(docs, seed)`` (~3.6 KB English documents with planted exact and
   near copies of earlier clean documents), cuts it into ``--drops`` consecutive drops and writes one Parquet
   file per drop into a scratch folder. The corpus is built in one piece so that copies whose original landed in
   an earlier drop become cross-drop duplicates, as in the real incremental case; building it in a child keeps
   the ~4 GB of text of a 1M corpus out of the measured process.
2. This process reads the drops in order and runs ``near_duplicates(drop, index, cfg, index_content)`` on each,
   the index growing by the entries of every drop before it (kept in memory as one Polars frame, as the
   orchestration would load it); ``index_content`` reads the few earlier documents in candidate pairs from their
   drop files for the exact-Jaccard verification, as the orchestration reads them from the lake.
3. The stage records pairs and drops nothing; a release decides. At the end ``near_representatives`` over every
   document's keep-rule columns and all recorded pairs gives the documents a release allowing every license
   would leave out (timed separately).

Peak RSS comes from a thread that samples ``psutil.Process().memory_info().rss`` every 20 ms over the whole
dedup phase (reading the drop files included). Left-out documents are counted by planted label: ``near_dup`` and
``exact_dup`` rows should go (one document of each planted pair; which one depends on the keep rule), ``clean``
ones should not. Output: one line per drop and, with ``--out``, a JSON report. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# Run from a checkout without installing: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


class PeakRss:
    """Peak resident set size of this process, sampled in a background thread."""

    def __init__(self, interval: float = 0.02) -> None:
        import psutil

        self._process = psutil.Process()
        self._interval = interval
        self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def current(self) -> int:
        return self._process.memory_info().rss

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _write_drops(docs: int, drops: int, seed: int, mean_chars: int, folder: str) -> dict[str, Any]:
    """Child process: build the corpus, write ``drop-XXX.parquet`` files, return planted counts and timings."""
    import polars as pl

    from curation_platform.samples import synthetic_corpus

    start = time.perf_counter()
    corpus = synthetic_corpus(docs, seed=seed, mean_chars=mean_chars)
    generate_seconds = time.perf_counter() - start
    size = -(-docs // drops)
    for i in range(drops):
        part = corpus.slice(i * size, size)
        drop = part.select(
            pl.col("id").alias("doc_id"),
            pl.lit(f"drop-{i:03d}").alias("drop"),
            pl.lit(i, dtype=pl.Int64).alias("drop_order"),
            pl.lit("CC-BY-4.0").alias("license"),
            pl.lit("web").alias("kind"),
            "text",
            "planted",
            pl.col("duplicate_of").alias("planted_duplicate_of"),
        )
        drop.write_parquet(Path(folder) / f"drop-{i:03d}.parquet")
    return {
        "generate_seconds": round(generate_seconds, 2),
        "write_seconds": round(time.perf_counter() - start - generate_seconds, 2),
        "mean_bytes": round(float(corpus["text"].str.len_bytes().mean()), 1),
        "planted": dict(sorted(corpus["planted"].value_counts().iter_rows())),
    }


def _child(queue: multiprocessing.Queue, *args: Any) -> None:
    queue.put(_write_drops(*args))


def generate(docs: int, drops: int, seed: int, mean_chars: int, folder: str) -> dict[str, Any]:
    """Run :func:`_write_drops` in a spawned child and add the child's peak RSS."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_child, args=(queue, docs, drops, seed, mean_chars, folder))
    child.start()
    report = queue.get()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"corpus generation failed with exit code {child.exitcode}")
    # ru_maxrss of terminated children, in KiB on Linux.
    report["generator_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--drops", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mean-chars", type=int, default=3600)
    parser.add_argument("--memory-limit", default=None, help="NearDedupConfig.memory_limit (default: the config's)")
    parser.add_argument("--temp-directory", default=None, help="NearDedupConfig.temp_directory")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    args = parser.parse_args()

    import polars as pl
    import psutil

    from curation_platform.ops.dedup_minhash import (
        NearDedupConfig, empty_near_index, near_duplicates, near_representatives,
    )

    overrides = {k: v for k, v in (("memory_limit", args.memory_limit), ("temp_directory", args.temp_directory))
                 if v is not None}
    cfg = NearDedupConfig(**overrides)

    with tempfile.TemporaryDirectory(prefix="dedup-scale-") as folder:
        corpus = generate(args.docs, args.drops, args.seed, args.mean_chars, folder)
        print(f"corpus: {args.docs:,} docs in {args.drops} drops, generated in {corpus['generate_seconds']} s, "
              f"planted {corpus['planted']}", flush=True)

        sampler = PeakRss()
        start_rss = sampler.current()
        index = empty_near_index()
        per_drop: list[dict[str, Any]] = []
        removed_by_label: dict[str, int] = {}
        total_docs = 0
        stage_seconds = 0.0
        pairs, keep_columns = [], []
        phase_start = time.perf_counter()

        def index_content(rows: pl.DataFrame) -> pl.DataFrame:
            return pl.concat([
                pl.scan_parquet(Path(folder) / f"{drop}.parquet", parallel="prefiltered").select("doc_id", "text")
                .filter(pl.col("doc_id").is_in(group["doc_id"].implode())).collect()
                for (drop,), group in rows.group_by("drop")
            ])

        for i in range(args.drops):
            docs = pl.read_parquet(Path(folder) / f"drop-{i:03d}.parquet")
            start = time.perf_counter()
            result, entries = near_duplicates(docs, index, cfg, index_content=index_content)
            seconds = time.perf_counter() - start
            index = pl.concat([index, entries], rechunk=False)
            pairs.append(result.verdicts.filter(pl.col("verdict") == "flag").select("doc_id", "duplicate_of", "value"))
            keep_columns.append(docs.select("doc_id", "drop_order", "license", "planted"))
            metrics = result.metrics
            row = {
                "drop": i,
                "docs_in": docs.height,
                "index_entries_in": metrics["index_entries_in"],
                "seconds": round(seconds, 2),
                "docs_per_s": round(docs.height / seconds, 1),
                "candidate_pairs": metrics["candidate_pairs"],
                "pairs_checked_exactly": metrics["pairs_checked_exactly"],
                "verified_pairs": metrics["verified_pairs"],
                "cross_drop_pairs": metrics["cross_drop_pairs"],
                "rss_after_mb": round(sampler.current() / 2**20),
                "peak_rss_so_far_mb": round(sampler.peak / 2**20),
            }
            per_drop.append(row)
            total_docs += docs.height
            stage_seconds += seconds
            print(json.dumps(row), flush=True)
            del docs, result, entries
        start = time.perf_counter()
        every = pl.concat(keep_columns)
        left_out = near_representatives(every.drop("planted"), pl.concat(pairs), cfg)
        selection_seconds = time.perf_counter() - start
        removed = every.join(left_out.select("doc_id"), on="doc_id", how="semi")
        removed_by_label = dict(sorted(removed["planted"].value_counts().iter_rows()))
        total_removed = removed.height
        wall = time.perf_counter() - phase_start
        peak = sampler.stop()

    planted_copies = corpus["planted"].get("near_dup", 0) + corpus["planted"].get("exact_dup", 0)
    report = {
        "machine": {
            "cores_logical": psutil.cpu_count(logical=True),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
            "polars": pl.__version__,
            "duckdb": __import__("duckdb").__version__,
        },
        "config": {"memory_limit": cfg.memory_limit, "temp_directory": cfg.temp_directory,
                   "bands": cfg.bands, "rows": cfg.rows, "num_perm": cfg.num_perm,
                   "bucket_link_limit": cfg.bucket_link_limit},
        "corpus": {"docs": args.docs, "drops": args.drops, "seed": args.seed, **corpus},
        "drops": per_drop,
        "totals": {
            "docs": total_docs,
            "stage_seconds": round(stage_seconds, 1),
            "wall_seconds": round(wall, 1),
            "selection_seconds": round(selection_seconds, 2),
            "docs_per_s": round(total_docs / stage_seconds, 1),
            "peak_rss_mb": round(peak / 2**20),
            "rss_before_mb": round(start_rss / 2**20),
            "index_entries_out": index.height,
            "index_estimated_mb": round(index.estimated_size() / 2**20),
            "removed": total_removed,
            "planted_copies": planted_copies,
            "removed_by_planted_label": dict(sorted(removed_by_label.items())),
        },
    }
    print(json.dumps(report["totals"]), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    # Keep thread pools to what the machine has before Polars or DuckDB start one.
    os.environ.setdefault("POLARS_MAX_THREADS", str(os.cpu_count() or 1))
    main()
