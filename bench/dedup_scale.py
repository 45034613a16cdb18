"""Throughput, peak memory and index size of the three out-of-core dedup stages at N and 4N documents.

    python bench/dedup_scale.py [--docs 50000] [--scale 4] [--index 1000000] [--batch-rows 20000]
                                [--memory-limit 512MB] [--mean-chars 3600] [--out bench/results/dedup_scale.json]

1. A child process builds ``synthetic_corpus(docs * (1 + scale) + earlier)`` (~3.6 KB English documents with planted
   exact and near copies) and writes three Parquet files: an earlier drop (``--earlier`` documents), a drop of N
   documents and one of ``scale`` x N, every text starting with a shared banner paragraph in one document of three.
2. The earlier drop runs through line, exact and near dedup (its index files, with real cross-drop copies); the
   index of every stage is then padded to ``--index`` entries of other, non-matching earlier documents (random
   hashes, band keys and line hashes in the compact format), as a long-running workspace would hold.
3. Each stage runs on each drop in its own spawned process, exactly as the pipeline calls it: a ParquetDropInput
   in batches of ``--batch-rows``, the index files queried in place, DuckDB under ``--memory-limit`` spilling to a
   scratch folder; the kept batches are consumed one by one. The process reports its wall time and its peak RSS
   (``ru_maxrss``): memory that stays flat from N to 4N is memory set by configuration, not by drop size.
4. Index bytes per document: every index file of the 4N drop, on disk (Parquet, zstd) and in memory (Arrow) once
   read, next to the format written before issue 10 (hex content hash, drop and order per row, 112-value MinHash
   signature per row), built from the same entries.
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
import time
from pathlib import Path
from typing import Any

# Run from a checkout without installing: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BANNER = "Subscribe to our newsletter for the weekly digest of every story from the whole editorial team."


def _write_drops(sizes: dict[str, int], seed: int, mean_chars: int, folder: str) -> dict[str, Any]:
    """Child process: the corpus in one piece (so copies cross drops), cut into the named drops."""
    import polars as pl

    from curation_platform.samples import synthetic_corpus

    start = time.perf_counter()
    corpus = synthetic_corpus(sum(sizes.values()), seed=seed, mean_chars=mean_chars)
    corpus = corpus.with_columns(
        pl.when(pl.int_range(pl.len()) % 3 == 0).then(pl.format("{}\n\n{}", pl.lit(BANNER), "text"))
        .otherwise("text").alias("text"))
    offset = 0
    for order, (name, size) in enumerate(sizes.items()):
        corpus.slice(offset, size).select(
            pl.col("id").alias("doc_id"), pl.lit(name).alias("drop"), pl.lit("CC-BY-4.0").alias("license"),
            pl.lit("web").alias("kind"), pl.lit(0.5).alias("quality_score"), "text",
        ).write_parquet(Path(folder) / f"{name}.parquet", row_group_size=20_000)
        offset += size
    return {"generate_seconds": round(time.perf_counter() - start, 1),
            "mean_bytes": round(float(corpus["text"].str.len_bytes().mean()), 1)}


def _stage(stage: str, drop: str, order: int, folder: str, batch_rows: int, memory_limit: str,
           index_drops: list[tuple[str, int]], write_index: bool) -> dict[str, Any]:
    """Child process: one stage on one drop, as the pipeline runs it; wall time and peak RSS."""
    import polars as pl

    from curation_platform.ops.dedup_exact import ExactDedupConfig, IndexPart, exact_duplicates
    from curation_platform.ops.dedup_minhash import NearDedupConfig, near_duplicates
    from curation_platform.ops.line_dedup import LineDedupConfig, line_dedup
    from curation_platform.outofcore import OutOfCore
    from curation_platform.records import ParquetDropInput
    from curation_platform.workspace import ParquetStreamWriter

    root = Path(folder)
    ooc = OutOfCore(batch_rows=batch_rows, memory_limit=memory_limit, spill_dir=str(root / "spill"))
    docs = ParquetDropInput(root / f"{drop}.parquet", drop, batch_rows,
                            with_columns={"drop_order": pl.lit(order, dtype=pl.Int64)})
    index = root / "index" / stage

    def content(rows: pl.DataFrame) -> pl.DataFrame:
        return pl.concat([pl.scan_parquet(root / f"{d}.parquet").select("doc_id", "text")
                          .filter(pl.col("doc_id").is_in(group["doc_id"].implode())).collect()
                          for (d,), group in rows.group_by("drop")])

    from curation_platform.licenses import license_restrictiveness

    license_restrictiveness(pl.Series(["MIT"]))  # loads the ScanCode license table once per process, untimed
    start = time.perf_counter()
    parts = [IndexPart(path, name, o) for name, o in index_drops for path in sorted(index.glob(f"{name}*.parquet"))]
    if stage == "lines":
        result, entries = line_dedup(docs, [p.source for p in parts], LineDedupConfig(), ooc=ooc)
    elif stage == "exact":
        result, entries = exact_duplicates(docs, parts, ExactDedupConfig(), ooc=ooc)
    else:
        result, entries = near_duplicates(docs, parts, NearDedupConfig(), index_content=content, ooc=ooc)
    # As the pipeline does: the index entries (a frame or an iterator of frames) are written first, with the
    # workspace's streaming writer (or only counted), then the kept batches and the verdicts are consumed.
    entry_count = 0
    index.mkdir(parents=True, exist_ok=True)
    with ParquetStreamWriter(index / f"{drop}.parquet" if write_index else root / "scratch-index.parquet") as out:
        for frame in ([entries] if isinstance(entries, pl.DataFrame) else entries):
            entry_count += frame.height
            out.write(frame)
    kept = verdicts = 0
    for batch in ([result.kept] if isinstance(result.kept, pl.DataFrame) else result.kept):
        kept += batch.height
    for frame in ([result.verdicts] if isinstance(result.verdicts, pl.DataFrame) else result.verdicts):
        verdicts += frame.height
    seconds = time.perf_counter() - start
    metrics = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}
    return {"seconds": round(seconds, 2), "kept": kept, "verdicts": verdicts, "metrics": metrics,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "index_entries": entry_count}


def _call(target: Any, *args: Any) -> Any:
    """Run ``target(*args)`` in a spawned process (its own peak RSS) and return its result."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(target, args)


def _pad_indexes(folder: Path, entries: int, near_params: str, seed: int) -> None:
    """Index files of ``entries`` other earlier documents that match nothing (random values, compact format)."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    ids = pl.Series("doc_id", np.char.mod("%032x", rng.integers(0, 2**62, entries)).astype(str))
    index = folder / "index"
    pl.DataFrame({"hash_hi": rng.integers(0, 2**63, entries, dtype=np.uint64),
                  "hash_lo": rng.integers(0, 2**63, entries, dtype=np.uint64), "doc_id": ids}).sort(
        "hash_hi", "hash_lo").write_parquet(index / "exact" / "earlier-pad.parquet", compression="zstd",
                                            compression_level=3)
    pl.DataFrame({"doc_id": ids, "band_keys": rng.integers(0, 2**63, (entries, 14), dtype=np.uint64)}).with_columns(
        pl.col("band_keys").cast(pl.List(pl.UInt64)), pl.lit(near_params, dtype=pl.Categorical()).alias("params")
    ).sort("doc_id").write_parquet(index / "near" / "earlier-pad.parquet", compression="zstd", compression_level=3)
    lines = entries * 5  # distinct lines of the padded documents
    pl.DataFrame({"line_hash": rng.integers(0, 2**63, lines, dtype=np.uint64),
                  "documents": np.ones(lines, dtype=np.uint32)}).sort("line_hash").write_parquet(
        index / "lines" / "earlier-pad.parquet", compression="zstd", compression_level=3)


def _index_sizes(folder: Path, drop: str, params: str) -> dict[str, Any]:
    """Bytes per document of each index of ``drop``: compact format as written, and the pre-issue-10 format built
    from the same entries, on disk (Parquet zstd level 3, as the workspace writes) and in memory (Arrow)."""
    import numpy as np
    import polars as pl

    from curation_platform.hashing import words_hex

    docs = pl.scan_parquet(folder / f"{drop}.parquet").select(pl.len()).collect().item()
    sizes: dict[str, Any] = {"documents": docs}

    def measure(frame: pl.DataFrame, path: Path) -> dict[str, float]:
        frame.write_parquet(path, compression="zstd", compression_level=3)
        return {"entries": frame.height, "disk_bytes_per_doc": round(path.stat().st_size / docs, 1),
                "memory_bytes_per_doc": round(frame.to_arrow().nbytes / docs, 1)}

    scratch = folder / "sizes"
    scratch.mkdir(exist_ok=True)
    exact = pl.read_parquet(folder / "index" / "exact" / f"{drop}.parquet")
    near = pl.read_parquet(folder / "index" / "near" / f"{drop}.parquet")
    lines = pl.read_parquet(folder / "index" / "lines" / f"{drop}.parquet")
    legacy_exact = exact.select(words_hex(exact["hash_hi"], exact["hash_lo"]), "doc_id", pl.lit(drop).alias("drop"),
                                pl.lit(2, dtype=pl.Int64).alias("drop_order"))
    rng = np.random.default_rng(0)  # stands in for the 112 MinHash values (uniform 32-bit, as real ones are)
    legacy_near = near.select("doc_id", pl.lit(drop).alias("drop"), pl.lit(2, dtype=pl.Int64).alias("drop_order"),
                              "band_keys", pl.Series("signature", rng.integers(0, 2**32, (near.height, 112),
                                                                               dtype=np.uint32)).cast(
                                  pl.List(pl.UInt32)), pl.lit(params).alias("params"))
    sizes["exact"] = measure(exact, scratch / "exact.parquet")
    sizes["exact_before"] = measure(legacy_exact, scratch / "exact_before.parquet")
    sizes["near"] = measure(near, scratch / "near.parquet")
    sizes["near_before"] = measure(legacy_near, scratch / "near_before.parquet")
    sizes["lines"] = measure(lines, scratch / "lines.parquet")
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=50_000, help="N: documents of the small drop")
    parser.add_argument("--scale", type=int, default=4, help="the large drop has scale x N documents")
    parser.add_argument("--earlier", type=int, default=10_000, help="documents of the real earlier drop")
    parser.add_argument("--index", type=int, default=1_000_000, help="padded index entries of earlier documents")
    parser.add_argument("--batch-rows", type=int, default=20_000)
    parser.add_argument("--memory-limit", default="512MB")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mean-chars", type=int, default=3600)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    parser.add_argument("--stages", default="lines,exact,near", help="comma-separated stages to measure")
    args = parser.parse_args()

    import polars as pl
    import psutil

    from curation_platform.ops.dedup_minhash import NearDedupConfig, signature_params

    small, large = "drop-n", f"drop-{args.scale}n"
    sizes = {"earlier": args.earlier, small: args.docs, large: args.docs * args.scale}
    report: dict[str, Any] = {
        "machine": {"cores_logical": psutil.cpu_count(logical=True),
                    "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
                    "python": platform.python_version(), "polars": pl.__version__,
                    "duckdb": __import__("duckdb").__version__},
        "settings": {k: getattr(args, k) for k in ("docs", "scale", "earlier", "index", "batch_rows",
                                                   "memory_limit", "mean_chars")},
    }
    with tempfile.TemporaryDirectory(prefix="dedup-scale-") as scratch:
        folder = Path(scratch)
        report["corpus"] = _call(_write_drops, sizes, args.seed, args.mean_chars, scratch)
        print(f"corpus: {sizes} in {report['corpus']['generate_seconds']} s", flush=True)
        for stage in ("lines", "exact", "near"):
            (folder / "index" / stage).mkdir(parents=True, exist_ok=True)
            _call(_stage, stage, "earlier", 0, scratch, args.batch_rows, args.memory_limit, [], True)
        _pad_indexes(folder, args.index, signature_params(NearDedupConfig()), args.seed)
        index_drops = [("earlier", 0)]
        runs = []
        for stage in [s for s in ("lines", "exact", "near") if s in args.stages.split(",")]:
            for order, drop in ((1, small), (2, large)):
                # Each drop against the earlier drop and the padding (the large drop also writes its index).
                row = _call(_stage, stage, drop, order, scratch, args.batch_rows, args.memory_limit,
                            index_drops, drop == large)
                row.update(stage=stage, drop=drop, docs=sizes[drop],
                           docs_per_s=round(sizes[drop] / max(row["seconds"], 1e-9), 1))
                runs.append(row)
                print(json.dumps({k: row[k] for k in ("stage", "drop", "docs", "seconds", "docs_per_s",
                                                      "peak_rss_mb")}), flush=True)
        report["runs"] = runs
        if set(args.stages.split(",")) >= {"lines", "exact", "near"}:  # every index of the large drop written
            report["index_sizes"] = _index_sizes(folder, large, signature_params(NearDedupConfig()))
            print(json.dumps(report["index_sizes"]), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    # Keep thread pools to what the machine has before Polars or DuckDB start one.
    os.environ.setdefault("POLARS_MAX_THREADS", str(os.cpu_count() or 1))
    main()
