"""Every-core bench: docs/s and CPU utilisation per stage with the local executor at 1 worker and at N workers.

Curates one generated drop (``scale_bench.generate_drop``, cached under ``--work``) through every stage, each stage
in its own subprocess, once per worker count, and reports per stage: documents, seconds, docs/s, CPU utilisation
(user + system CPU seconds of the stage process and its workers / wall seconds; 2.0 = two cores busy), peak RSS
of the stage process and of its largest worker, and the 1-minute load average when the stage started (the machine
may be shared: read the numbers with it).

    .venv/bin/python bench/workers_bench.py --gb 0.05 --batch-rows 4000 --workers 1 2 --work /tmp/scale_work
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

_CHILD = """
import json, os, resource, sys, time
sys.path.insert(0, {repo!r})
from curation_platform.config import load_config
from curation_platform.executors import local
from curation_platform.pipeline import run_stage
from curation_platform.workspace import Workspace
cfg = load_config({config!r})
cfg.engine.batch_rows = {batch_rows}
cfg.engine.workers = {workers}
ws = Workspace({workspace!r})
load = os.getloadavg()[0]
started = time.perf_counter()
summary = run_stage(ws, cfg, {stage!r}, {drop!r})
seconds = time.perf_counter() - started
local.shutdown()  # the workers are waited for, so their CPU time and peak RSS are counted below
own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({{"input": summary.input, "seconds": seconds, "load_1min": load,
                  "cpu_seconds": own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime,
                  "peak_rss_mb": own.ru_maxrss / 1024, "worker_peak_rss_mb": children.ru_maxrss / 1024}}))
"""


def run(work: Path, drop: str, stages: list[str], workers: int, batch_rows: int, config: Path) -> list[dict]:
    """Every stage of ``drop`` with ``workers`` workers, in a fresh workspace; one row per stage."""
    from curation_platform.pipeline import STAGES
    from curation_platform.workspace import Workspace

    workspace = work / f"ws-workers{workers}"
    shutil.rmtree(workspace, ignore_errors=True)
    ws = Workspace(workspace)
    ws.register_drop(drop, work / "landing" / drop)
    rows = []
    for stage in STAGES:
        code = _CHILD.format(repo=str(REPO), config=str(config), batch_rows=batch_rows, workers=workers,
                             workspace=str(workspace), stage=stage, drop=drop)
        # Timing the startup (imports) is not the point: the child measures run_stage only, CPU over the process.
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"stage {stage} failed with {workers} workers:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result.update(stage=stage, workers=workers, docs_per_s=round(result["input"] / result["seconds"], 1))
        if stage in stages:
            rows.append(result)
            print(f"  workers {workers} {stage:16s} {result['input']:>7} docs {result['seconds']:6.1f} s "
                  f"{result['docs_per_s']:>8.0f} docs/s  CPU {result['cpu_seconds']:6.1f} s "
                  f"(x{result['cpu_seconds'] / result['seconds']:.2f})  RSS {result['peak_rss_mb']:5.0f} MB, "
                  f"worker {result['worker_peak_rss_mb']:5.0f} MB  load {result['load_1min']:.1f}", flush=True)
    shutil.rmtree(workspace, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=0.05, help="Text size of the drop, in GB.")
    parser.add_argument("--batch-rows", type=int, default=4_000, help="engine.batch_rows (several batches).")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--stages", nargs="*", default=None, help="Report only these stages (all run).")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--config", type=Path, default=REPO / "curation.yaml")
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "results" / "scale")
    parser.add_argument("--out", type=Path, default=None, help="Write the results as JSON here.")
    args = parser.parse_args(argv)
    from bench.scale_bench import generate_drop
    from curation_platform.pipeline import STAGES

    name = f"web-{args.gb:g}gb"
    generated = generate_drop(args.work / "landing", name, args.gb, args.seed)
    print(f"drop {name}: {generated['docs']} documents, batch_rows {args.batch_rows}, {os.cpu_count()} cores")
    results = {w: run(args.work, name, args.stages or STAGES, w, args.batch_rows, args.config) for w in args.workers}
    base = results[args.workers[0]]
    lines = ["| stage | " + " | ".join(f"{w} worker(s): docs/s (CPU x, load)" for w in args.workers) + " | speed-up |",
             "|---|" + "---:|" * (len(args.workers) + 1)]
    for i, row in enumerate(base):
        cells = [f"{r[i]['docs_per_s']:,.0f} (x{r[i]['cpu_seconds'] / r[i]['seconds']:.2f}, {r[i]['load_1min']:.1f})"
                 for r in results.values()]
        lines.append(f"| {row['stage']} | " + " | ".join(cells) +
                     f" | {results[args.workers[-1]][i]['docs_per_s'] / row['docs_per_s']:.2f} |")
    print("\n".join(lines))
    report = {"drop": name, "generated": generated, "batch_rows": args.batch_rows,
              "results": {str(w): r for w, r in results.items()}, "table": "\n".join(lines)}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
