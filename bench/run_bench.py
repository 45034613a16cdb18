"""Throughput and peak memory of every engine stage on a deterministic synthetic corpus.

    python bench/run_bench.py --docs 20000 [--out bench/results/latest.json] [--stages normalize,language]
                              [--threads 2] [--seed 0] [--mean-chars 3600] [--config curation.yaml]
    python bench/run_bench.py --docs 20000 --signatures-only

The corpus comes from ``curation_platform.samples.synthetic_corpus`` (~3.6 KB English documents with planted
exact and near duplicates, PII and low-quality pages), is converted to the canonical record frame and runs through
the engine stage functions in pipeline order, each stage's kept documents feeding the next. A stage whose module
or function does not exist (yet) is skipped with a message; a stage that raises is reported and the next stage
gets the previous input. See bench/README.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

# Run from a checkout without installing: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@dataclass(frozen=True)
class StageSpec:
    name: str  # name used by --stages and in the report
    module: str
    function: str
    config_class: str
    config_field: str  # attribute of CurationConfig holding this stage's config (for --config)
    call: str = "plain"  # plain: fn(docs, cfg); dedup: fn(docs, index, cfg) -> (result, entries); decontaminate


# Pipeline order, as in curation_platform/pipeline.py (scoring runs before dedup so the keep rule can use it).
STAGES: list[StageSpec] = [
    StageSpec("normalize", "curation_platform.ops.normalize", "normalize", "NormalizeConfig", "normalize"),
    StageSpec("language", "curation_platform.ops.language", "identify_language", "LanguageConfig", "language"),
    StageSpec("quality_signals", "curation_platform.ops.quality_signals", "quality_signals", "SignalsConfig",
              "signals"),
    StageSpec("filters", "curation_platform.ops.filters", "filter_documents", "FiltersConfig", "filters"),
    StageSpec("score", "curation_platform.ops.score", "score_documents", "ScoreConfig", "scoring"),
    StageSpec("pii", "curation_platform.ops.pii", "redact_pii", "PiiConfig", "pii"),
    StageSpec("dedup_exact", "curation_platform.ops.dedup_exact", "exact_duplicates", "ExactDedupConfig",
              "exact_dedup", call="dedup"),
    StageSpec("dedup_minhash", "curation_platform.ops.dedup_minhash", "near_duplicates", "NearDedupConfig",
              "near_dedup", call="dedup"),
    StageSpec("decontaminate", "curation_platform.ops.decontaminate", "decontaminate", "DecontaminationConfig",
              "decontamination", call="decontaminate"),
]


class RssSampler:
    """Samples this process's resident set size in a background thread; ``peak()`` since the last ``reset()``."""

    def __init__(self, interval: float = 0.005) -> None:
        import psutil

        self._process = psutil.Process()
        self._interval = interval
        self._peak = self.current()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def current(self) -> int:
        return self._process.memory_info().rss

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            rss = self.current()
            with self._lock:
                self._peak = max(self._peak, rss)

    def reset(self) -> None:
        with self._lock:
            self._peak = self.current()

    def peak(self) -> int:
        rss = self.current()  # a stage shorter than one interval still counts its end state
        with self._lock:
            self._peak = max(self._peak, rss)
            return self._peak

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _mb(value: int) -> float:
    return round(value / 2**20, 1)


def machine_info() -> dict[str, Any]:
    import polars as pl
    import psutil

    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores_logical": os.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "cpu_model": model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "polars": pl.__version__,
        "polars_threads": pl.thread_pool_size(),
    }


def to_records(corpus, drop: str = "bench-0001", source: str = "bench"):
    """The benchmark corpus (id, text, ...) as the canonical record frame of curation_platform.records, with
    ``doc_id`` derived the way the readers derive it (xxh128 of source, source id and text)."""
    import polars as pl

    from curation_platform.hashing import xxh128_expr
    from curation_platform.records import RECORD_SCHEMA

    frame = corpus.select(
        xxh128_expr(pl.concat_str(pl.lit(source), pl.col("id"), pl.col("text"), separator="\x1f")).alias("doc_id"),
        pl.lit(source).alias("source"),
        pl.lit(drop).alias("drop"),
        pl.col("id").alias("source_id"),
        pl.lit("CC-BY-4.0").alias("license"),
        pl.lit("web").alias("kind"),
        pl.col("text"),
        pl.lit(None).alias("messages"),
        pl.lit("{}").alias("provenance"),
        pl.lit("data.jsonl").alias("file"),
        (pl.int_range(pl.len(), dtype=pl.Int64) + 1).alias("line"),
        pl.lit("jsonl").alias("format"),
        pl.lit(None).alias("code_language"),
        pl.lit(None).alias("declared_language"),
    )
    return frame.select([pl.col(name).cast(dtype) for name, dtype in RECORD_SCHEMA.items()])


def _load(spec: StageSpec) -> tuple[Callable | None, Any, str]:
    """(function, module, message); function is None when the stage cannot run yet."""
    try:
        module = importlib.import_module(spec.module)
    except ImportError as exc:
        return None, None, f"module {spec.module} not importable ({exc})"
    fn = getattr(module, spec.function, None)
    if fn is None:
        return None, module, f"{spec.module}.{spec.function} does not exist"
    if getattr(module, spec.config_class, None) is None:
        return None, module, f"{spec.module}.{spec.config_class} does not exist"
    return fn, module, ""


def _config(spec: StageSpec, module: Any, curation_config: Any) -> Any:
    if curation_config is not None and hasattr(curation_config, spec.config_field):
        return getattr(curation_config, spec.config_field)
    return getattr(module, spec.config_class)()


def _empty_index(module: Any):
    """The dedup module's empty index: an ``empty_*index()`` factory, an ``*INDEX_SCHEMA`` dict, or no columns."""
    import polars as pl

    for name in sorted(dir(module)):
        if name.startswith("empty_") and name.endswith("index") and callable(getattr(module, name)):
            return getattr(module, name)()
    for name in sorted(dir(module)):
        if name.endswith("INDEX_SCHEMA") and isinstance(getattr(module, name), dict):
            return pl.DataFrame(schema=getattr(module, name))
    return pl.DataFrame()


def _removed_by_label(result: Any, planted: Any) -> dict[str, int]:
    """How many documents of each planted label the stage removed (drop or quarantine verdicts)."""
    import polars as pl

    removed = result.removed_ids
    if len(removed) == 0:
        return {}
    counts = planted.filter(pl.col("doc_id").is_in(removed.implode())).group_by("planted").len().sort("planted")
    return dict(zip(counts["planted"].to_list(), counts["len"].to_list()))


def _small_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The stage's scalar metrics and small flat dicts (e.g. counts per rule), JSON-safe; big samples are left out."""
    keep: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, (bool, int, float, str)) or value is None:
            keep[key] = value
        elif isinstance(value, dict) and len(value) <= 30 and all(
            isinstance(v, (bool, int, float, str)) for v in value.values()
        ):
            keep[key] = {str(k): v for k, v in value.items()}
    return json.loads(json.dumps(keep, default=str))


def _top_rules(result: Any, limit: int = 6) -> dict[str, int]:
    import polars as pl

    verdicts = result.verdicts.filter(pl.col("verdict").is_in(["drop", "quarantine"]))
    counts = verdicts.group_by("rule").len().sort(["len", "rule"], descending=[True, False]).head(limit)
    return dict(zip(counts["rule"].to_list(), counts["len"].to_list()))


def run_stages(docs, planted, selected: list[StageSpec], curation_config: Any, sampler: RssSampler,
               threads: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import polars as pl

    rows: list[dict[str, Any]] = []
    setup: dict[str, Any] = {}
    for spec in selected:
        fn, module, problem = _load(spec)
        if fn is None:
            print(f"[skip] {spec.name}: {problem}", flush=True)
            rows.append({"stage": spec.name, "status": f"skipped: {problem}"})
            continue
        cfg = _config(spec, module, curation_config)
        args: tuple = (docs, cfg)
        if spec.call == "dedup":
            # A single drop against an empty index: the work is the within-drop comparison.
            stage_input = docs.with_columns(pl.lit(0, dtype=pl.Int64).alias("drop_order"))
            args = (stage_input, _empty_index(module), cfg)
        elif spec.call == "decontaminate":
            sampler.reset()
            start = time.perf_counter()
            index = module.benchmark_ngram_index(module.load_benchmarks(cfg), cfg)
            setup["decontaminate_index"] = {
                "seconds": round(time.perf_counter() - start, 3),
                "ngrams": index.height,
                "peak_rss_mb": _mb(sampler.peak()),
            }
            args = (docs, index, cfg)
        sampler.reset()
        rss_before = sampler.current()
        start = time.perf_counter()
        try:
            out = fn(*args)
        except Exception as exc:  # report and go on: one unfinished stage must not hide the others' numbers
            seconds = time.perf_counter() - start
            message = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            print(f"[error] {spec.name} after {seconds:.2f}s: {message}", flush=True)
            rows.append({"stage": spec.name, "status": f"error: {message}", "docs_in": docs.height})
            continue
        seconds = time.perf_counter() - start
        peak = sampler.peak()
        result = out[0] if isinstance(out, tuple) else out
        kept = result.kept.drop("drop_order", strict=False) if spec.call == "dedup" else result.kept
        row = {
            "stage": spec.name,
            "status": "ok",
            "docs_in": docs.height,
            "docs_out": kept.height,
            "seconds": round(seconds, 3),
            "docs_per_s": round(docs.height / seconds, 1) if seconds > 0 else None,
            "docs_per_s_per_thread": round(docs.height / seconds / threads, 1) if seconds > 0 else None,
            "mb_per_s": round(docs["text"].str.len_bytes().sum() / 2**20 / seconds, 1) if seconds > 0 else None,
            "peak_rss_mb": _mb(peak),
            "rss_delta_mb": _mb(peak - rss_before),
            "removed": docs.height - kept.height,
            "removed_by_rule": _top_rules(result),
            "removed_by_planted_label": _removed_by_label(result, planted),
            "metrics": _small_metrics(result.metrics),
        }
        rows.append(row)
        print(
            f"[ok] {spec.name:<16} {row['docs_in']:>8} -> {row['docs_out']:>8} docs  {seconds:8.2f}s  "
            f"{row['docs_per_s']:>10,.0f} docs/s  peak {row['peak_rss_mb']:>8,.0f} MB",
            flush=True,
        )
        docs = kept
    return rows, setup


def signatures_benchmark(corpus, curation_config: Any, sampler: RssSampler, threads: int) -> dict[str, Any]:
    """MinHash signatures alone (the FineWeb setting by default), on the raw corpus text."""
    spec = next(s for s in STAGES if s.name == "dedup_minhash")
    try:
        module = importlib.import_module(spec.module)
    except ImportError as exc:
        return {"status": f"skipped: {exc}"}
    if not hasattr(module, "minhash_signatures"):
        return {"status": f"skipped: {spec.module}.minhash_signatures does not exist"}
    cfg = _config(spec, module, curation_config)
    texts = corpus["text"]
    sampler.reset()
    start = time.perf_counter()
    signatures = module.minhash_signatures(texts, cfg)
    seconds = time.perf_counter() - start
    return {
        "status": "ok",
        "docs": len(texts),
        "signature_shape": list(signatures.shape),
        "signature_dtype": str(signatures.dtype),
        "seconds": round(seconds, 3),
        "docs_per_s": round(len(texts) / seconds, 1),
        "docs_per_s_per_thread": round(len(texts) / seconds / threads, 1),
        "mb_per_s": round(texts.str.len_bytes().sum() / 2**20 / seconds, 1),
        "peak_rss_mb": _mb(sampler.peak()),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=20_000, help="documents in the synthetic corpus")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON to this file")
    parser.add_argument("--stages", default=None,
                        help=f"comma-separated subset, run in pipeline order: {','.join(s.name for s in STAGES)}")
    parser.add_argument("--signatures-only", action="store_true",
                        help="only time minhash_signatures (dedup_minhash) on the corpus text")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mean-chars", type=int, default=3600)
    parser.add_argument("--threads", type=int, default=None,
                        help="POLARS_MAX_THREADS / RAYON_NUM_THREADS for the run (default: all cores)")
    parser.add_argument("--config", type=Path, default=None,
                        help="curation.yaml whose stage configs to use (default: each stage's defaults)")
    args = parser.parse_args(argv)
    if args.docs < 1:
        parser.error("--docs must be at least 1")
    if args.stages:
        names = [n.strip() for n in args.stages.split(",") if n.strip()]
        unknown = sorted(set(names) - {s.name for s in STAGES})
        if unknown:
            parser.error(f"unknown stage(s) {', '.join(unknown)}; stages are {', '.join(s.name for s in STAGES)}")
        args.stage_names = names
    else:
        args.stage_names = [s.name for s in STAGES]
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        # Must be set before Polars (and Rust libraries using rayon) start their thread pools.
        os.environ["POLARS_MAX_THREADS"] = str(args.threads)
        os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    import polars as pl

    from curation_platform.samples import synthetic_corpus

    curation_config = None
    if args.config is not None:
        from curation_platform.config import load_config

        curation_config = load_config(args.config)

    sampler = RssSampler()
    machine = machine_info()
    threads = args.threads or machine["polars_threads"] or 1
    print(f"machine: {machine['cores_logical']} logical cores ({machine['cores_physical']} physical), "
          f"{machine['cpu_model']}, polars threads {machine['polars_threads']}", flush=True)

    start = time.perf_counter()
    corpus = synthetic_corpus(args.docs, seed=args.seed, mean_chars=args.mean_chars)
    generate_seconds = time.perf_counter() - start
    docs = to_records(corpus)
    planted = pl.DataFrame({"doc_id": docs["doc_id"], "planted": corpus["planted"]})
    labels = corpus.group_by("planted").len().sort("planted")
    corpus_info = {
        "docs": corpus.height,
        "seed": args.seed,
        "mean_chars": round(float(corpus["text"].str.len_chars().mean()), 1),
        "mean_bytes": round(float(corpus["text"].str.len_bytes().mean()), 1),
        "total_mb": _mb(int(corpus["text"].str.len_bytes().sum())),
        "planted": dict(zip(labels["planted"].to_list(), labels["len"].to_list())),
        "generate_seconds": round(generate_seconds, 3),
    }
    print(f"corpus: {corpus.height} docs, mean {corpus_info['mean_bytes']:.0f} bytes, "
          f"{corpus_info['total_mb']} MB, generated in {generate_seconds:.2f}s; planted {corpus_info['planted']}",
          flush=True)

    report: dict[str, Any] = {"machine": machine, "threads": threads, "corpus": corpus_info}
    if args.signatures_only:
        result = signatures_benchmark(corpus, curation_config, sampler, threads)
        print(f"minhash_signatures: {json.dumps(result)}", flush=True)
        report["signatures"] = result
    else:
        selected = [s for s in STAGES if s.name in args.stage_names]
        run_start = time.perf_counter()
        stages, setup = run_stages(docs, planted, selected, curation_config, sampler, threads)
        total_seconds = time.perf_counter() - run_start
        timed = [row for row in stages if row.get("status") == "ok"]
        stage_seconds = sum(row["seconds"] for row in timed)
        report["stages"] = stages
        report["setup"] = setup
        report["totals"] = {
            "stages_run": len(timed),
            "stages_skipped_or_failed": len(stages) - len(timed),
            "docs_in": docs.height,
            "docs_out": timed[-1]["docs_out"] if timed else None,
            "stage_seconds": round(stage_seconds, 3),
            "wall_seconds": round(total_seconds, 3),
            "docs_per_s": round(docs.height / stage_seconds, 1) if stage_seconds > 0 else None,
            "docs_per_s_per_thread": round(docs.height / stage_seconds / threads, 1) if stage_seconds > 0 else None,
            "peak_rss_mb": max((row["peak_rss_mb"] for row in timed), default=None),
        }
        totals = report["totals"]
        print(f"total: {totals['stages_run']} stages, {totals['docs_in']} -> {totals['docs_out']} docs in "
              f"{totals['stage_seconds']}s ({totals['docs_per_s']} docs/s end to end), "
              f"peak RSS {totals['peak_rss_mb']} MB", flush=True)
    sampler.stop()
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}", flush=True)
    return report


if __name__ == "__main__":
    main()
