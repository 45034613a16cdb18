"""Peak memory of reading one large Parquet, CSV or JSON Lines input file, batch by batch.

    python bench/input_bench.py --work /tmp/input_bench [--source data.jsonl] [--formats parquet,csv]
                                [--batch-rows 20000] [--row-group-rows 50000] [--out bench/results/input.json]

Builds (once, cached under ``--work``) one drop per format from the same JSON Lines file, by default the 1 GB
drop of ``bench/scale_bench.py`` (``/tmp/scale_work2/landing/web-1gb/data.jsonl``; pass ``--source`` for another
one): ``parquet`` (written with Polars' streaming sink in row groups of ``--row-group-rows`` rows, zstd) and
``csv`` (header plus one row per record, multi-line texts quoted). Each drop is then read by
``read_drop_batches`` with ``--batch-rows`` in its own subprocess (the batches are counted and dropped, as the
ingest stage does once it has written them), and the subprocess reports its peak RSS (``getrusage``), the
records read and the seconds. To compare with older code, run the script with ``PYTHONPATH`` pointing at the
other checkout: the subprocess imports ``curation_platform`` from ``--code`` (default: this checkout). ``--reader-only`` measures the file reader alone (the candidate rows, without the
field extraction and decisions every batch then goes through).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = Path("/tmp/scale_work2/landing/web-1gb/data.jsonl")
MANIFEST = ("source: web-crawl\nkind: web\nlicense: CC-BY-4.0\nprovenance:\n  description: input bench\n"
            "text_field: text\nid_field: id\n")

_CHILD = """
import json, resource, sys, time
from pathlib import Path
from curation_platform.manifest import load_manifest
from curation_platform.readers import IngestConfig, _candidates, _data_files, read_drop_batches
drop, batch_rows, reader_only = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
start = time.perf_counter()
records = quarantined = batches = largest = 0
if reader_only:  # the file reader alone: candidate rows, no field extraction or decisions
    for frame in _candidates(_data_files(drop), load_manifest(drop), IngestConfig(), batch_rows):
        records += len(frame)
        batches += 1
        largest = max(largest, len(frame))
else:
    for batch in read_drop_batches(drop, IngestConfig(), batch_rows=batch_rows):
        records += len(batch.records)
        quarantined += len(batch.quarantine)
        batches += 1
        largest = max(largest, batch.read_count)
print(json.dumps({"seconds": round(time.perf_counter() - start, 1), "records": records,
                  "quarantined": quarantined, "batches": batches, "largest_batch": largest,
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""


def build(work: Path, source: Path, fmt: str, row_group_rows: int) -> Path:
    """The drop folder holding ``source`` converted to ``fmt`` (built once; streaming, so it fits in memory)."""
    import polars as pl

    drop = work / f"{fmt}-drop"
    target = drop / f"data.{fmt}"
    if target.exists():
        return drop
    drop.mkdir(parents=True, exist_ok=True)
    (drop / "manifest.yaml").write_text(MANIFEST + f"format: {fmt}\n", encoding="utf-8")
    partial = drop / f".partial.{fmt}"
    lazy = pl.scan_ndjson(source, schema={"id": pl.String, "text": pl.String})
    start = time.perf_counter()
    if fmt == "parquet":
        lazy.sink_parquet(partial, row_group_size=row_group_rows, compression="zstd")
    elif fmt == "csv":
        lazy.sink_csv(partial)
    else:
        raise SystemExit(f"unknown format {fmt}")
    partial.rename(target)
    print(f"built {target} ({target.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - start:.0f} s",
          flush=True)
    return drop


def measure(drop: Path, batch_rows: int, code: Path, reader_only: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code)}
    # Run in ``code``: ``python -c`` puts the working directory first on sys.path, before PYTHONPATH.
    done = subprocess.run([sys.executable, "-c", _CHILD, str(drop.resolve()), str(batch_rows),
                           str(int(reader_only))], env=env,
                          cwd=code, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"reading {drop} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/input_bench"))
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--formats", default="parquet,csv")
    parser.add_argument("--batch-rows", type=int, default=20_000)
    parser.add_argument("--row-group-rows", type=int, default=50_000)
    parser.add_argument("--code", type=Path, default=REPO, help="checkout whose curation_platform is measured")
    parser.add_argument("--reader-only", action="store_true",
                        help="measure the file reader alone (candidate rows), not the whole ingest")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = {"source": str(args.source), "batch_rows": args.batch_rows, "code": str(args.code),
               "reader_only": args.reader_only, "formats": {}}
    for fmt in args.formats.split(","):
        drop = build(args.work, args.source, fmt, args.row_group_rows)
        size = sum(p.stat().st_size for p in drop.glob("data.*"))
        row = {"file_gb": round(size / 1e9, 2), **measure(drop, args.batch_rows, args.code, args.reader_only)}
        results["formats"][fmt] = row
        print(f"{fmt:8} {row['file_gb']:.2f} GB  {row['records']:,} records in {row['batches']} batches "
              f"(largest {row['largest_batch']:,})  {row['seconds']} s  peak RSS {row['peak_rss_mb']:,} MB",
              flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
