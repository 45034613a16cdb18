"""Docs/s of one per-document stage (``pipeline.run_stage``, reading and writing the lake) with the local executor
and with the Ray executor on a local Ray, on the deterministic synthetic corpus.

    python bench/ray_bench.py --docs 20000 [--stage language] [--cpus 2] [--batch-rows 2000] [--out FILE]

The drop is landed and taken through the stages before ``--stage`` with the local executor; then the stage runs
locally (``engine.workers`` 1, and 2 when the engine has that setting), and on Ray twice: the first Ray run
(``ray cold``) includes starting the workers and loading the operator's model in each, the second (``ray warm``)
reuses them, which is what every drop after the first sees in a long-running Ray cluster. ``ray_init_s`` is the
``ray.init`` itself. Both executors write byte-identical files; the bench checks that too. The machine's load
average (1 minute) is recorded before and after: on a shared machine the numbers mean little without it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--stage", default="language")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--batch-rows", type=int, default=2000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import polars as pl
    import ray

    from curation_platform.config import CurationConfig
    from curation_platform.pipeline import STAGES, run_stage
    from curation_platform.samples import synthetic_corpus, write_corpus_drop
    from curation_platform.workspace import Workspace

    import os

    load_before = os.getloadavg()[0]
    local = CurationConfig.model_validate({"versioning": {"enabled": False}})
    local = local.model_copy(update={"engine": local.engine.model_copy(update={"batch_rows": args.batch_rows})})
    on_ray = local.model_copy(update={"engine": local.engine.model_copy(
        update={"executor": "ray", "batch_rows": args.batch_rows})})
    with tempfile.TemporaryDirectory(prefix="ray-bench-") as tmp:
        root = Path(tmp)
        corpus = synthetic_corpus(args.docs, seed=0)
        write_corpus_drop(root / "landing", "bench", corpus.select("id", "text"), source="bench")
        ws = Workspace(root / "data")
        ws.register_drop("bench", root / "landing" / "bench")
        for stage in STAGES[: STAGES.index(args.stage)]:
            run_stage(ws, local, stage, "bench")
        docs = pl.read_parquet(ws.stage_path(STAGES[STAGES.index(args.stage) - 1], "bench")).height

        def timed(cfg: CurationConfig) -> tuple[float, bytes]:
            start = time.perf_counter()
            run_stage(ws, cfg, args.stage, "bench")
            seconds = time.perf_counter() - start
            return seconds, ws.stage_path(args.stage, "bench").read_bytes() + ws.ledger_path(args.stage, "bench").read_bytes()

        run_stage(ws, local, args.stage, "bench")  # load the model in this process first, as a warm worker has it
        local_s, local_bytes = timed(local)
        local2_s = None
        if "workers" in type(local.engine).model_fields:  # the local process pool, where the engine has one
            two = local.model_copy(update={"engine": local.engine.model_copy(update={"workers": 2})})
            run_stage(ws, two, args.stage, "bench")
            local2_s, local2_bytes = timed(two)
            assert local2_bytes == local_bytes
        start = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
        init_s = time.perf_counter() - start
        try:
            cold_s, cold_bytes = timed(on_ray)
            warm_s, warm_bytes = timed(on_ray)
        finally:
            ray.shutdown()
    result = {
        "stage": args.stage, "documents": docs, "ray_cpus": args.cpus, "batch_rows": args.batch_rows,
        "local_docs_per_s": round(docs / local_s), "ray_cold_docs_per_s": round(docs / cold_s),
        "ray_warm_docs_per_s": round(docs / warm_s),
        "local_s": round(local_s, 2), "ray_init_s": round(init_s, 2), "ray_cold_s": round(cold_s, 2),
        "ray_warm_s": round(warm_s, 2), "ray_warm_speedup": round(local_s / warm_s, 2),
        "byte_identical": local_bytes == cold_bytes == warm_bytes,
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)], "cores": os.cpu_count(),
    }
    if local2_s is not None:
        result.update(local_workers2_s=round(local2_s, 2), local_workers2_docs_per_s=round(docs / local2_s))
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
