"""Every-core bench: docs/s and CPU utilisation per stage with the local executor at 1 worker and at N workers.

Curates one generated drop (``scale_bench.generate_drop``, cached under ``--work``) through every stage in one
subprocess per worker count (as ``curate run`` runs a drop: the pool starts once, measured on its own line), and
reports per stage: documents, seconds, docs/s, CPU utilisation (user + system CPU seconds of the process and its
workers / wall seconds; 2.0 = two cores busy), the RSS of the process and its workers after the stage, and the
1-minute load average when the stage started (the machine may be shared: read the numbers with it).

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

# The child's CPU seconds: user + system of the process, its reaped children and its live ones (the pool's
# workers). Shared with near_verify_bench.py.
CPU_SECONDS = """
def cpu_seconds():
    # user + system CPU of this process, its reaped children and its live ones (the pool's workers)
    own = me.cpu_times()
    total = own.user + own.system + own.children_user + own.children_system
    for child in me.children(recursive=True):
        try:
            times = child.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total
"""

_CHILD = """
import json, os, sys, time
import psutil
sys.path.insert(0, {repo!r})
from curation_platform.config import load_config
from curation_platform.executors import local
from curation_platform.pipeline import STAGES, run_stage
from curation_platform.workspace import Workspace
cfg = load_config({config!r})
cfg.engine.batch_rows = {batch_rows}
cfg.engine.workers = {workers}
ws = Workspace({workspace!r})
me = psutil.Process()

{cpu_seconds}
def rss_mb():
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 1e6

def measured(name, work):
    load, cpu, started = os.getloadavg()[0], cpu_seconds(), time.perf_counter()
    value = work()
    seconds = time.perf_counter() - started
    print("BENCH " + json.dumps({{"stage": name, "seconds": seconds, "cpu_seconds": cpu_seconds() - cpu,
                                 "load_1min": load, "rss_mb_after": rss_mb(), **(value or {{}})}}), flush=True)

if {workers} > 1:  # the pool starts once per run (as in `curate run`): measured on its own
    def start():
        pool = local._pool({workers})
        for future in [pool.submit(exec, "import curation_platform.pipeline") for _ in range({workers})]:
            future.result()
    measured("(pool start)", start)
for stage in STAGES:
    measured(stage, lambda: {{"input": run_stage(ws, cfg, stage, {drop!r}).input}})
"""


def run(work: Path, drop: str, stages: list[str], workers: int, batch_rows: int, config: Path) -> list[dict]:
    """Every stage of ``drop`` with ``workers`` workers, in one process (as `curate run` runs a drop), in a fresh
    workspace; one row per stage (and one for the pool's start)."""
    from curation_platform.workspace import Workspace

    workspace = work / f"ws-workers{workers}"
    shutil.rmtree(workspace, ignore_errors=True)
    Workspace(workspace).register_drop(drop, work / "landing" / drop)
    code = _CHILD.format(cpu_seconds=CPU_SECONDS, repo=str(REPO), config=str(config), batch_rows=batch_rows,
                         workers=workers,
                         workspace=str(workspace), drop=drop)
    rows = []
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as child:
        for line in child.stdout:
            if not line.startswith("BENCH "):  # a stage's own output
                continue
            result = json.loads(line.removeprefix("BENCH "))
            result.update(workers=workers, utilisation=round(result["cpu_seconds"] / result["seconds"], 2))
            if "input" in result:
                result["docs_per_s"] = round(result["input"] / result["seconds"], 1)
            if result["stage"] in stages or "input" not in result:
                rows.append(result)
            print(f"  workers {workers} {result['stage']:16s} {result.get('input', 0):>7} docs "
                  f"{result['seconds']:6.1f} s {result.get('docs_per_s', 0):>8.0f} docs/s  CPU "
                  f"{result['cpu_seconds']:6.1f} s (x{result['utilisation']:.2f})  RSS after "
                  f"{result['rss_mb_after']:5.0f} MB  load {result['load_1min']:.1f}", flush=True)
    if child.returncode != 0:
        raise SystemExit(f"the run with {workers} workers failed (exit {child.returncode})")
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
    by_stage = {w: {r["stage"]: r for r in rows} for w, rows in results.items()}
    lines = ["| stage | " + " | ".join(f"{w} worker(s): s, docs/s, CPU x, load" for w in args.workers) +
             " | speed-up |", "|---|" + "---:|" * (len(args.workers) + 1)]
    for stage in [r["stage"] for r in results[args.workers[-1]]]:
        cells = [f"{r[stage]['seconds']:.1f}, {r[stage].get('docs_per_s', 0):,.0f}, x{r[stage]['utilisation']:.2f}, "
                 f"{r[stage]['load_1min']:.1f}" if stage in r else "-" for r in by_stage.values()]
        first, last = by_stage[args.workers[0]].get(stage), by_stage[args.workers[-1]][stage]
        speed = f"{first['seconds'] / last['seconds']:.2f}" if first else "-"
        lines.append(f"| {stage} | " + " | ".join(cells) + f" | {speed} |")
    print("\n".join(lines))
    report = {"drop": name, "generated": generated, "batch_rows": args.batch_rows,
              "results": {str(w): r for w, r in results.items()}, "table": "\n".join(lines)}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
