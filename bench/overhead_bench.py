"""Per-drop overhead bench: what `curate run` costs beyond the engine work, on small drops.

Times `curate run` (a fresh process each, as users call it) in a fresh git repository with DVC versioning on:

- ``first``: the first run on one tiny drop (creates the Dagster instance, the DVC repository, the first release);
- ``nothing``: a run with nothing to do (no new drop, release current);
- ``history`` (with ``--history N``): N tiny drops curated in one run, so that the next runs work against a long
  drop history (the dedup indexes, the release and its audit cover every drop);
- ``one``: one tiny new drop, then the release rebuilt;
- ``many``: ``--drops`` tiny new drops in one run, then the release rebuilt once;
- ``nothing_again``: a second run with nothing to do.

For each: wall seconds, CPU seconds of the process (user + system, children included: DVC runs in a subprocess),
and with ``-X importtime`` the cumulative import time of the heavy packages and whether Dagster, Great
Expectations and DVC were imported at all. CPU seconds are the stable number on a shared machine; wall seconds
are what a user waits. With ``--sensor`` it also times one evaluation of the landing sensor (what `make ui`'s
daemon runs every 15 seconds) on the curated workspace.

    .venv/bin/python bench/overhead_bench.py --drops 3 --out bench/results/overhead.json

A tiny drop is ``--docs`` documents of the deterministic synthetic corpus (a fresh seed per drop).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# Packages whose import time is worth reporting (cumulative microseconds from -X importtime).
HEAVY = ["dagster", "great_expectations", "dvc", "pandas", "ray", "matplotlib", "sklearn", "presidio_analyzer",
         "polars", "duckdb", "pyarrow", "trafilatura", "assets.definitions", "curation_platform.config"]


def tiny_drop(landing: Path, name: str, docs: int, seed: int) -> None:
    from curation_platform.samples import synthetic_corpus, write_corpus_drop

    frame = synthetic_corpus(docs, seed=seed).select("id", "text")
    write_corpus_drop(landing, name, frame, source="web-crawl")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def curate_run(project: Path, env: dict, importtime: bool) -> dict:
    """One `curate run` in a fresh process; wall and CPU seconds, exit code and import breakdown."""
    command = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "curation_platform.cli", "run",
               "--landing", "landing", "--workspace", "data", "--now", str(time.time() + 3600)]
    cpu = _children_cpu()
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    result = {"wall_s": round(wall, 2), "cpu_s": round(_children_cpu() - cpu, 2), "exit": proc.returncode,
              "summary": proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else ""}
    if proc.returncode != 0:
        result["error"] = "\n".join(l for l in proc.stderr.splitlines() if not l.startswith("import time:"))[-2000:]
    if importtime:
        imports = {}
        for line in proc.stderr.splitlines():
            match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|(\s*)(\S+)", line)
            if match and match.group(3) in HEAVY and match.group(3) not in imports:
                imports[match.group(3)] = round(int(match.group(1)) / 1e6, 2)
        result["import_s"] = imports
        result["imported"] = {name: name in imports for name in ("dagster", "great_expectations", "dvc")}
    return result


def sensor_tick(project: Path, env: dict) -> dict:
    """One landing-sensor evaluation in a fresh process, on the workspace's Dagster instance (the one `make ui`
    uses): seconds to import the definitions, seconds of the tick, and the runs it requests."""
    code = ("import time; t=time.perf_counter(); import dagster as dg; from assets.definitions import defs, "
            "landing_sensor; from pathlib import Path; from curation_platform.cli import dagster_instance; "
            "i=time.perf_counter(); inst=dagster_instance(Path('data')); "
            "ctx=dg.build_sensor_context(instance=inst, resources={'curation': defs.resources['curation']}); "
            "r=landing_sensor(ctx); n=len(getattr(r,'run_requests',None) or []); "
            "print(round(i-t,2), round(time.perf_counter()-i,2), n)")
    cpu = _children_cpu()
    proc = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True, check=False,
                          env={**env, "PYTHONPATH": str(REPO), "CURATION_WORKSPACE": "data",
                               "CURATION_LANDING": "landing", "CURATION_CONFIG": "curation.yaml"})
    if proc.returncode != 0:
        return {"exit": proc.returncode, "error": proc.stderr[-1500:]}
    imports, tick, requests = proc.stdout.split()
    return {"import_s": float(imports), "tick_s": float(tick), "run_requests": int(requests),
            "cpu_s": round(_children_cpu() - cpu, 2)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "results" / "overhead",
                        help="Scratch folder (emptied first).")
    parser.add_argument("--drops", type=int, default=3, help="Tiny drops in the 'many' run.")
    parser.add_argument("--docs", type=int, default=20, help="Documents per tiny drop.")
    parser.add_argument("--history", type=int, default=0,
                        help="Curate this many tiny drops before the 'one' run (its cost against a long history).")
    parser.add_argument("--no-importtime", action="store_true", help="Skip the -X importtime breakdown.")
    parser.add_argument("--sensor", action="store_true", help="Also time one landing-sensor evaluation.")
    parser.add_argument("--out", type=Path, default=None, help="Write the results as JSON here.")
    args = parser.parse_args(argv)

    project = args.work / "project"
    shutil.rmtree(args.work, ignore_errors=True)
    project.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    shutil.copy(REPO / "curation.yaml", project / "curation.yaml")
    # Bytecode caching on, as for a user: a PYTHONDONTWRITEBYTECODE in the caller's environment would make every
    # run compile its imports again (seconds per run).
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
           "PYTHONPATH": str(REPO), "GX_ANALYTICS_ENABLED": "false", "DAGSTER_DISABLE_TELEMETRY": "1"}
    importtime = not args.no_importtime
    landing = project / "landing"
    results: dict = {"docs_per_drop": args.docs, "drops_in_many": args.drops, "history_drops": args.history,
                     "load_average": os.getloadavg()}

    tiny_drop(landing, "tiny-0000", args.docs, seed=1000)
    results["first"] = curate_run(project, env, importtime)
    results["nothing"] = curate_run(project, env, importtime)
    if args.history:
        for i in range(args.history):
            tiny_drop(landing, f"hist-{i:05d}", args.docs, seed=100_000 + i)
        results["history"] = curate_run(project, env, importtime)
    tiny_drop(landing, "tiny-0001", args.docs, seed=1001)
    results["one"] = curate_run(project, env, importtime)
    for i in range(args.drops):
        tiny_drop(landing, f"tiny-{i + 2:04d}", args.docs, seed=1002 + i)
    results["many"] = curate_run(project, env, importtime)
    results["nothing_again"] = curate_run(project, env, importtime)
    if args.sensor:
        tiny_drop(landing, "tiny-sensor", args.docs, seed=999)
        results["sensor_tick"] = sensor_tick(project, env)
    results["load_average_end"] = os.getloadavg()

    print(f"{'run':<14} {'wall s':>7} {'cpu s':>7}  exit  dagster  GX  DVC")
    for key in ("first", "nothing", "history", "one", "many", "nothing_again"):
        if key not in results:
            continue
        r = results[key]
        imported = r.get("imported", {})
        flags = "  ".join(f"{'yes' if imported.get(n) else 'no ':>3}" for n in ("dagster", "great_expectations", "dvc"))
        print(f"{key:<14} {r['wall_s']:>7} {r['cpu_s']:>7}  {r['exit']:>4}  {flags}")
    if args.sensor:
        print("sensor tick:", results["sensor_tick"])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
