"""Near dedup's exact verification on every core: the near_deduped stage with 1 and N local workers.

Curates one generated drop (``scale_bench.generate_drop``, cached under ``--work``) up to ``exact_deduped`` once
(kept in ``<work>/ws-near-verify`` for later runs), then runs ``near_deduped`` through ``pipeline.run_stage``, as
the pipeline does, once per worker count and ``--repeat`` times in alternation (1, N, 1, N...: the machine may be
shared, so neighbouring runs see a similar load), each in its own process. Per run: the stage's seconds and CPU
seconds (the process and its pool workers), and the same for the verification alone (the time the stage spends
consuming the verification batches' results), the number of verification batches and how many ran in a worker,
and the 1-minute load average at the start.

    .venv/bin/python bench/near_verify_bench.py --gb 0.2 --batch-rows 20000 --workers 1 2 --work /tmp/scale_work
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from workers_bench import CPU_SECONDS  # noqa: E402  (the child's CPU-seconds helper)

_CHILD = """
import json, os, sys, time
import psutil
sys.path.insert(0, {repo!r})
from curation_platform import pipeline
from curation_platform.config import load_config
from curation_platform.executors import local
from curation_platform.workspace import Workspace
cfg = load_config({config!r})
cfg.engine.batch_rows = {batch_rows}
cfg.engine.workers = {workers}
ws = Workspace({workspace!r})
me = psutil.Process()

{cpu_seconds}
if {workers} > 1:  # the pool starts once per process, as in `curate run` (not part of the stage's time)
    pool = local._pool({workers})
    for future in [pool.submit(exec, "import curation_platform.pipeline") for _ in range({workers})]:
        future.result()
verification = {{}}
near_mapper = pipeline._near_mapper

def timed_mapper(cfg, drop):
    inner = near_mapper(cfg, drop)
    calls = iter(["signature", "verify"])  # the stage maps its signature batches, then its verification batches

    def timed(function, tasks):
        name, cpu, started = next(calls), cpu_seconds(), time.perf_counter()
        yield from inner(function, tasks)
        verification.update({{f"{{name}}_seconds": time.perf_counter() - started,
                             f"{{name}}_cpu_seconds": cpu_seconds() - cpu}})
    return timed

pipeline._near_mapper = timed_mapper
if {stages!r}:
    for stage in {stages!r}:
        pipeline.run_stage(ws, cfg, stage, {drop!r})
    sys.exit(0)
load, cpu, started = os.getloadavg()[0], cpu_seconds(), time.perf_counter()
summary = pipeline.run_stage(ws, cfg, "near_deduped", {drop!r})
seconds = time.perf_counter() - started
print("BENCH " + json.dumps({{"workers": {workers}, "docs": summary.input, "seconds": seconds,
                             "cpu_seconds": cpu_seconds() - cpu, "load_1min": load, **verification,
                             **{{k: summary.metrics[k] for k in ("candidate_pairs", "pairs_checked_exactly",
                                                                "verified_pairs", "verify_batches",
                                                                "verify_batches_in_workers")}}}}), flush=True)
"""


def _child(work: Path, drop: str, workers: int, batch_rows: int, config: Path, stages: list[str]) -> dict | None:
    code = _CHILD.format(cpu_seconds=CPU_SECONDS, repo=str(REPO), config=str(config), batch_rows=batch_rows,
                         workers=workers,
                         workspace=str(work / "ws-near-verify"), drop=drop, stages=stages)
    proc = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, check=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BENCH ")]
    return json.loads(lines[-1].removeprefix("BENCH ")) if lines else None


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=0.05, help="Text size of the drop, in GB.")
    parser.add_argument("--batch-rows", type=int, default=20_000, help="engine.batch_rows")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=2, help="Runs per worker count, in alternation.")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--config", type=Path, default=REPO / "curation.yaml")
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "results" / "scale")
    parser.add_argument("--out", type=Path, default=None, help="Write the results as JSON here.")
    args = parser.parse_args(argv)
    from bench.scale_bench import generate_drop
    from curation_platform.pipeline import STAGES
    from curation_platform.workspace import Workspace

    name = f"web-{args.gb:g}gb"
    generated = generate_drop(args.work / "landing", name, args.gb, args.seed)
    ws = Workspace(args.work / "ws-near-verify")
    if name not in [d.name for d in ws.drops()]:
        ws.register_drop(name, args.work / "landing" / name)
    if not ws.has_stage("exact_deduped", name):
        print(f"curating {name} up to exact_deduped (once)", flush=True)
        _child(args.work, name, max(args.workers), args.batch_rows, args.config,
               STAGES[: STAGES.index("exact_deduped") + 1])
    print(f"drop {name}: {generated['docs']} documents, batch_rows {args.batch_rows}", flush=True)
    rows = []
    for _ in range(args.repeat):
        for workers in args.workers:
            row = _child(args.work, name, workers, args.batch_rows, args.config, [])
            row["utilisation"] = round(row["cpu_seconds"] / row["seconds"], 2)
            row["verify_utilisation"] = round(row["verify_cpu_seconds"] / row["verify_seconds"], 2)
            row["docs_per_s"] = round(row["docs"] / row["seconds"], 1)
            rows.append(row)
            print(f"  workers {workers}: {row['docs']} docs {row['seconds']:6.1f} s ({row['docs_per_s']:.0f} docs/s) "
                  f"CPU {row['cpu_seconds']:6.1f} s (x{row['utilisation']:.2f}); verification "
                  f"{row['verify_seconds']:6.1f} s CPU {row['verify_cpu_seconds']:6.1f} s "
                  f"(x{row['verify_utilisation']:.2f}), {row['verify_batches']} batches "
                  f"({row['verify_batches_in_workers']} in workers), {row['candidate_pairs']} candidate pairs; "
                  f"load {row['load_1min']:.1f}", flush=True)
    report = {"drop": name, "generated": generated, "batch_rows": args.batch_rows, "runs": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
