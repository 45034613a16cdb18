"""Scale bench: peak memory per stage must be set by ``engine.batch_rows``, not by the size of the drop.

Generates one deterministic web-like JSONL drop per size (``--sizes 0.25,1,4`` GB of text, or ``--gb S`` and
``--factor F`` for S and F x S GB), then curates each through every stage with ``pipeline.run_stage`` (the function
the Dagster assets call), each stage in its own subprocess, and reports per stage: documents in, wall seconds, CPU
seconds (user + system of the subprocess and of its children, so core use shows), docs/s and peak RSS (the larger
of ``getrusage`` ``ru_maxrss`` of the subprocess itself and of its largest child, read at its end), plus the bytes
written per stage. The table has docs/s and peak RSS per size and the last/first ratios; the verdict line compares
the largest peak RSS of the last size with the first.

    .venv/bin/python bench/scale_bench.py --gb 0.1 --factor 4 --out bench/results/scale.json
    .venv/bin/python bench/scale_bench.py --sizes 0.25,1,4 --batch-rows 20000   # the issue's >= 1 GB run

Generated drops are cached under ``--work`` (default ``bench/results/scale/``); ``--keep`` keeps the workspaces.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CHUNK_DOCS = 5_000  # documents generated (and written) at a time: generation memory is bounded too
BOILERPLATE = [
    "Subscribe to our newsletter for the latest stories, delivered every Friday morning.",
    "We use cookies to improve your experience. By continuing to browse you accept our cookie policy.",
    "Share this article on social media and follow us for more updates from our newsroom.",
    "All rights reserved. Reproduction without written permission is prohibited.",
]
# Small word lists: pages in other languages (fastText tells them apart; filters and dedup see other text).
FOREIGN = {
    "de": "der die und ist nicht mit von auf den eine wir haben werden auch nach bei oder Stadt Wasser Schule "
          "Arbeit Zeit Jahr Haus Welt Leben Menschen Geschichte Wetter heute morgen immer".split(),
    "fr": "le la les et est une des pas pour dans avec sur nous vous mais plus ville eau école travail temps "
          "année maison monde vie gens histoire aujourd'hui demain toujours".split(),
    "es": "el la los y es una de que en por con para pero más ciudad agua escuela trabajo tiempo año casa "
          "mundo vida gente historia hoy mañana siempre nosotros".split(),
}


def _foreign_texts(rng: np.random.Generator, n: int, language: str) -> list[str]:
    """``n`` pages of 80-400 words drawn from one language's list, in sentences of 8-16 words."""
    words = np.array(FOREIGN[language])
    lengths = rng.integers(80, 400, n)
    picks = words[rng.integers(0, len(words), int(lengths.sum()))]
    frame = pl.DataFrame({"doc": np.repeat(np.arange(n), lengths), "word": picks})
    frame = frame.with_columns(pl.int_range(pl.len()).over("doc").alias("pos"))
    # A full stop every 12 words makes sentences.
    frame = frame.with_columns(pl.when(pl.col("pos") % 12 == 11).then(pl.col("word") + ".").otherwise("word"))
    return frame.group_by("doc", maintain_order=True).agg(pl.col("word").str.join(" "))["word"].to_list()


def generate_drop(landing: Path, name: str, gb: float, seed: int) -> dict:
    """Write ``landing/name`` (manifest, data.jsonl, _READY) with about ``gb`` GB of text. Deterministic for
    the same arguments. Mix: the synthetic English corpus (exact and near duplicates, PII, low-quality pages,
    varied lengths), 10% pages in German, French or Spanish, and a boilerplate line on 30% of pages."""
    from curation_platform.samples import synthetic_corpus, write_corpus_drop

    drop = landing / name
    if (drop / "_READY").exists():
        return json.loads((drop / "generated.json").read_text())
    started = time.perf_counter()
    target = int(gb * 1e9)
    written, docs, chunk = 0, 0, 0
    drop.mkdir(parents=True, exist_ok=True)
    write_corpus_drop(landing, name, pl.DataFrame({"id": [], "text": []}, schema={"id": pl.String, "text": pl.String}),
                      source="web-crawl")
    (drop / "_READY").unlink()
    with (drop / "data.jsonl").open("wb") as handle:
        while written < target:
            rng = np.random.default_rng([seed, chunk])
            frame = synthetic_corpus(CHUNK_DOCS, seed=seed * 1000 + chunk).select("id", "text")
            n = frame.height
            foreign = rng.random(n) < 0.10
            languages = rng.choice(list(FOREIGN), int(foreign.sum()))
            texts = frame["text"].to_numpy().copy()
            idx = np.flatnonzero(foreign)
            for language in FOREIGN:  # a loop over three languages, not documents
                chosen = idx[languages == language]
                texts[chosen] = _foreign_texts(rng, len(chosen), language)
            boiler = np.where(rng.random(n) < 0.30, rng.integers(0, len(BOILERPLATE), n), -1)
            frame = frame.with_columns(
                pl.format("c{}-{}", pl.lit(chunk), pl.col("id")).alias("id"),
                (pl.Series(texts, dtype=pl.String)
                 + pl.Series(boiler).replace_strict({-1: "", **{i: "\n\n" + b for i, b in enumerate(BOILERPLATE)}},
                                                    return_dtype=pl.String)).alias("text"))
            buffer = frame.write_ndjson().encode()
            handle.write(buffer)
            written += int(frame["text"].str.len_bytes().sum())
            docs += n
            chunk += 1
    (drop / "_READY").write_bytes(b"")
    info = {"docs": docs, "text_bytes": written, "file_bytes": (drop / "data.jsonl").stat().st_size,
            "seconds": round(time.perf_counter() - started, 1)}
    (drop / "generated.json").write_text(json.dumps(info))
    return info


_CHILD = """
import json, resource, sys, time
sys.path.insert(0, {repo!r})
from curation_platform.config import load_config
from curation_platform.pipeline import run_stage
from curation_platform.workspace import Workspace
cfg = load_config({config!r})
cfg.engine.batch_rows = {batch_rows}
ws = Workspace({workspace!r})
def cpu():
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
cpu_started, started = cpu(), time.perf_counter()
summary = run_stage(ws, cfg, {stage!r}, {drop!r})
seconds = time.perf_counter() - started
# Stop the local executor's worker pool first: RUSAGE_CHILDREN counts a worker's CPU and peak RSS once it is reaped.
from curation_platform.executors.local import shutdown
shutdown()
cpu_seconds = cpu() - cpu_started
own, worker = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({{"input": summary.input, "kept": summary.kept, "seconds": seconds, "cpu_seconds": cpu_seconds,
                  "peak_rss_mb": max(own, worker) / 1024, "process_rss_mb": own / 1024,
                  "worker_rss_mb": worker / 1024}}))
"""


def run_size(work: Path, gb: float, seed: int, batch_rows: int, config: Path, keep: bool) -> dict:
    from curation_platform.pipeline import STAGES
    from curation_platform.workspace import Workspace

    landing = work / "landing"
    name = f"web-{gb:g}gb"
    generated = generate_drop(landing, name, gb, seed)
    workspace = work / f"ws-{gb:g}gb-b{batch_rows}"
    shutil.rmtree(workspace, ignore_errors=True)
    ws = Workspace(workspace)
    ws.register_drop(name, landing / name)
    rows = []
    for stage in STAGES:
        code = _CHILD.format(repo=str(REPO), config=str(config), batch_rows=batch_rows, workspace=str(workspace),
                             stage=stage, drop=name)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"stage {stage} failed at {gb} GB:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result.update(stage=stage, docs_per_s=round(result["input"] / result["seconds"], 1),
                      cores=round(result["cpu_seconds"] / result["seconds"], 2),
                      stage_bytes=ws.stage_path(stage, name).stat().st_size,
                      ledger_bytes=ws.ledger_path(stage, name).stat().st_size)
        rows.append(result)
        print(f"  {gb:g} GB {stage:16s} {result['input']:>8} docs {result['seconds']:7.1f} s "
              f"{result['cpu_seconds']:7.1f} s CPU {result['docs_per_s']:>9.0f} docs/s  peak RSS {result['peak_rss_mb']:6.0f} MB  "
              f"stage file {result['stage_bytes'] / 1e6:7.1f} MB", flush=True)
    stage_bytes = sum(r["stage_bytes"] for r in rows)
    if not keep:
        shutil.rmtree(workspace, ignore_errors=True)
    return {"gb": gb, "generated": generated, "batch_rows": batch_rows, "stages": rows,
            "stage_bytes_total": stage_bytes}


def table(sizes: list[dict]) -> str:
    """The README / bench/README.md table: one row per stage, docs/s and peak RSS at each size, and the ratios of
    the last size to the first."""
    first, last = sizes[0], sizes[-1]
    head = "| stage | " + " | ".join(f"{s['gb']:g} GB docs/s | {s['gb']:g} GB peak RSS" for s in sizes) + \
        " | RSS ratio | docs/s ratio |"
    lines = [head, "|---|" + "---:|---:|" * len(sizes) + "---:|---:|"]
    for i, a in enumerate(first["stages"]):
        b = last["stages"][i]
        cells = " | ".join(f"{s['stages'][i]['docs_per_s']:,.0f} | {s['stages'][i]['peak_rss_mb']:,.0f} MB"
                           for s in sizes)
        lines.append(f"| {a['stage']} | {cells} | {b['peak_rss_mb'] / a['peak_rss_mb']:.2f} | "
                     f"{b['docs_per_s'] / a['docs_per_s']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=1.0, help="Text size of the smaller drop, in GB.")
    parser.add_argument("--factor", type=int, default=4, help="The larger drop is this many times the smaller.")
    parser.add_argument("--sizes", type=str, default=None,
                        help="Comma-separated text sizes in GB, e.g. 0.25,1,4 (overrides --gb and --factor).")
    parser.add_argument("--batch-rows", type=int, default=20_000, help="engine.batch_rows for every stage.")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--config", type=Path, default=REPO / "curation.yaml")
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "results" / "scale")
    parser.add_argument("--out", type=Path, default=None, help="Write the results as JSON here.")
    parser.add_argument("--keep", action="store_true", help="Keep the workspaces (to inspect or gc them).")
    args = parser.parse_args(argv)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    args.work.mkdir(parents=True, exist_ok=True)
    sizes = [float(s) for s in args.sizes.split(",")] if args.sizes else [args.gb, args.gb * args.factor]
    if len(sizes) < 2:
        parser.error("--sizes needs at least two sizes")
    results = [run_size(args.work, gb, args.seed, args.batch_rows, args.config, args.keep) for gb in sizes]
    small, large = results[0], results[-1]
    report = {"batch_rows": args.batch_rows, "sizes": results, "table": table(results)}
    peak = max(r["peak_rss_mb"] for r in large["stages"]) / max(r["peak_rss_mb"] for r in small["stages"])
    print(report["table"])
    print(f"largest peak RSS at {large['gb']:g} GB / at {small['gb']:g} GB: {peak:.2f} "
          f"({'flat within 20%' if peak <= 1.2 else 'NOT flat within 20%'})")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
