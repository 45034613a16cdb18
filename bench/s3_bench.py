"""Object storage overhead: the same drop scanned, read and written on local disk and in an S3 bucket.

    .venv/bin/python bench/s3_bench.py --docs 5000           # starts a moto S3 server on 127.0.0.1
    AWS_ENDPOINT_URL=... .venv/bin/python bench/s3_bench.py --bucket my-bucket   # a real store (bucket must exist)

Prints seconds and MB/s for: scanning the landing area (settle rule and fingerprint), ``read_drop`` of one JSONL
drop, writing its records as one lake Parquet file, and reading that file back with Polars. Against moto (a
Python server on the same machine) the numbers are a lower bound of a real store's cost per request, not its
bandwidth.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from curation_platform.landing import scan_landing
from curation_platform.readers import IngestConfig, read_drop
from curation_platform.samples import synthetic_corpus, write_corpus_drop
from curation_platform.storage import as_path
from curation_platform.workspace import write_parquet_atomic


def _timed(action):
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def _measure(landing: str, lake: str, drop: str, size_mb: float) -> dict:
    scan_s, scan = _timed(lambda: scan_landing(landing, settle_seconds=0, now=time.time() + 60))
    assert [name for name, _, _ in scan.ready] == [drop], scan
    read_s, ingested = _timed(lambda: read_drop(scan.ready[0][1], IngestConfig(), drop=drop))
    target = as_path(lake) / "stages" / "raw_documents" / f"{drop}.parquet"
    write_s, _ = _timed(lambda: write_parquet_atomic(ingested.records, target))
    back_s, back = _timed(lambda: pl.read_parquet(str(target)))
    assert back.equals(ingested.records)
    return {"scan_s": round(scan_s, 3), "read_drop_s": round(read_s, 3), "read_drop_mb_s": round(size_mb / read_s, 1),
            "write_parquet_s": round(write_s, 3), "read_parquet_s": round(back_s, 3), "records": ingested.records.height}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bucket", default=None, help="an existing bucket (default: start moto and create one)")
    args = parser.parse_args()

    server = None
    if args.bucket is None:
        from moto.server import ThreadedMotoServer

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="bench",
                          AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    bucket = args.bucket or "bench"
    try:
        tmp = Path(tempfile.mkdtemp())
        drop = "2026-01-bench"
        write_corpus_drop(tmp / "landing", drop, synthetic_corpus(args.docs, seed=7), source="bench")
        (tmp / "landing" / drop / "_READY").write_text("")
        size_mb = sum(p.stat().st_size for p in (tmp / "landing" / drop).iterdir()) / 1e6
        fs = as_path(f"s3://{bucket}").fs
        if server is not None:
            fs.mkdir(bucket)
        upload_s, _ = _timed(lambda: fs.put(str(tmp / "landing" / drop), f"{bucket}/landing/", recursive=True))
        results = {"docs": args.docs, "drop_mb": round(size_mb, 1), "upload_s": round(upload_s, 3)}
        for _ in range(args.rounds):  # alternating, so both pay the first call's warm-up alike; the last round counts
            results["local"] = _measure(str(tmp / "landing"), str(tmp / "lake"), drop, size_mb)
            results["s3"] = _measure(f"s3://{bucket}/landing", f"s3://{bucket}/lake", drop, size_mb)
        print(json.dumps(results, indent=2))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
