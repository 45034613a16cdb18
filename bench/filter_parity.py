"""Keep/drop agreement of our Gopher, Gopher-repetition, C4 and FineWeb rules with DataTrove's filters on real text.

    python bench/filter_parity.py [--corpora manpages,pydocs] [--max-docs 1500] [--cache-dir DIR]
                                  [--oracle-python /path/to/venv/bin/python] [--out bench/results/parity.json]

DataTrove is the oracle only, never a dependency of the project: install it into a separate virtual environment
(``python3.11 -m venv /tmp/dt && /tmp/dt/bin/pip install datatrove spacy polars``; DataTrove's English word and
sentence splitting is a blank spaCy English pipeline with its sentencizer, so no model download is needed) and pass
that interpreter with ``--oracle-python``. The script then runs itself under that interpreter in ``--oracle``
mode on a Parquet file of texts. When ``datatrove`` is importable in the current interpreter it is used directly.

Corpora are built from what the machine has installed, never from the repository, and cached in ``--cache-dir``:

- ``manpages``: Linux manual pages rendered to plain text (``apt-get install -y man-db manpages`` and whatever
  other packages ship pages; ``man -P cat -l FILE`` with ``MANWIDTH=80``), an even sample of the installed
  English pages of sections 1 to 8. Reference-manual style: option lists, short lines, code.
- ``pydocs``: Python's HTML documentation (``apt-get install -y python3-doc``), one document per second-level
  section of each page (a page without subsections is one document), converted to text by our own HTML path
  (``normalize`` with trafilatura). Technical prose with examples.

Both sides see the same texts: the corpus goes through our ``normalize`` stage first. For every document and rule
family the script compares "kept by every rule of the family" with "kept by DataTrove's filter", and reports the
agreement per family and corpus, the rules behind the disagreements, and a few examples.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# Run from a checkout without installing: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FAMILIES = ["gopher_quality", "gopher_repetition", "c4", "fineweb"]
TARGET = 0.97
MAN_ROOT = Path("/usr/share/man")
PYDOC_GLOB = "/usr/share/doc/python3*/html"


# ---------------------------------------------------------------------------------------------------------- oracle

def run_oracle(texts: list[str]) -> list[dict[str, str]]:
    """DataTrove's verdicts per document: {family: "keep" | drop reason}. Each filter gets a fresh Document
    (the C4 filter rewrites the text it keeps)."""
    from datatrove.data import Document
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                            GopherRepetitionFilter)

    filters = {
        "gopher_quality": GopherQualityFilter(),
        "gopher_repetition": GopherRepetitionFilter(),
        "c4": C4QualityFilter(),
        "fineweb": FineWebQualityFilter(),
    }
    out = []
    for i, text in enumerate(texts):
        row = {}
        for family, f in filters.items():
            try:
                verdict = f.filter(Document(text=text, id=str(i)))
            except ZeroDivisionError:  # the reference divides by the word count without a guard
                verdict = (False, "zero_division")
            if verdict is True:
                row[family] = "keep"
            else:
                row[family] = verdict[1] if isinstance(verdict, tuple) else "drop"
        out.append(row)
    return out


def _oracle_main(in_path: str, out_path: str) -> None:
    texts = [json.loads(line)["text"] for line in Path(in_path).read_text(encoding="utf-8").splitlines()]
    with open(out_path, "w", encoding="utf-8") as fh:
        for row in run_oracle(texts):
            fh.write(json.dumps(row) + "\n")


def oracle_verdicts(texts: list[str], oracle_python: str | None) -> list[dict[str, str]] | None:
    """DataTrove's verdicts, in-process when importable, else through ``oracle_python``; None when neither."""
    if oracle_python is None:
        try:
            import datatrove  # noqa: F401
        except ImportError:
            return None
        return run_oracle(texts)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "texts.jsonl", Path(tmp) / "verdicts.jsonl"
        src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
        subprocess.run([oracle_python, str(Path(__file__).resolve()), "--oracle", str(src), str(dst)], check=True)
        return [json.loads(line) for line in dst.read_text(encoding="utf-8").splitlines()]


# --------------------------------------------------------------------------------------------------------- corpora

def _even_sample(items: list, k: int) -> list:
    if len(items) <= k:
        return items
    step = len(items) / k
    return [items[int(i * step)] for i in range(k)]


def _render_man(path: Path) -> str:
    env = {**os.environ, "MANWIDTH": "80", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "MAN_KEEP_FORMATTING": ""}
    done = subprocess.run(["man", "-P", "cat", "-l", str(path)], capture_output=True, env=env, timeout=120)
    return done.stdout.decode("utf-8", errors="replace")


def build_manpages(max_docs: int) -> list[dict]:
    """Rendered manual pages: [{source_id, format, text}]."""
    pages = sorted(p for section in range(1, 9) for p in (MAN_ROOT / f"man{section}").glob("*.gz"))
    if not pages:
        raise SystemExit("no manual pages under /usr/share/man: apt-get install -y man-db manpages")
    chosen = _even_sample(pages, max_docs)
    with ThreadPoolExecutor(max_workers=4) as pool:
        texts = list(pool.map(_render_man, chosen))
    return [{"source_id": p.name, "format": "txt", "text": t} for p, t in zip(chosen, texts) if t.strip()]


def build_pydocs(max_docs: int) -> list[dict]:
    """Python HTML documentation, one HTML document per second-level section: [{source_id, format, text}]."""
    import glob

    import lxml.html

    roots = sorted(glob.glob(PYDOC_GLOB))
    if not roots:
        raise SystemExit("no Python HTML documentation under /usr/share/doc: apt-get install -y python3-doc")
    docs = []
    for path in sorted(Path(roots[-1]).rglob("*.html")):
        tree = lxml.html.parse(str(path)).getroot()
        sections = tree.xpath('//div[@role="main"]/section/section') or tree.xpath('//div[@role="main"]')
        for j, section in enumerate(sections):
            body = lxml.html.tostring(section, encoding="unicode")
            html = f"<html><head><title>{path.stem}</title></head><body><main>{body}</main></body></html>"
            docs.append({"source_id": f"{path.relative_to(roots[-1])}#{j}", "format": "html", "text": html})
    return _even_sample(docs, max_docs)


BUILDERS = {"manpages": build_manpages, "pydocs": build_pydocs}


def load_corpus(name: str, max_docs: int, cache_dir: Path):
    """The corpus as normalized canonical records (our ``normalize`` stage), cached as Parquet."""
    import polars as pl

    from curation_platform.ops.normalize import NormalizeConfig, normalize
    from curation_platform.records import RECORD_SCHEMA

    cache = cache_dir / f"{name}-{max_docs}.parquet"
    if cache.exists():
        return pl.read_parquet(cache)
    raw = BUILDERS[name](max_docs)
    n = len(raw)
    kind = "text" if name == "manpages" else "web"
    frame = pl.DataFrame({
        "doc_id": [f"{name}-{i:05d}" for i in range(n)], "source": [name] * n, "drop": [name] * n,
        "source_id": [r["source_id"] for r in raw], "license": ["unknown"] * n, "kind": [kind] * n,
        "text": [r["text"] for r in raw], "messages": [None] * n, "provenance": ["{}"] * n,
        "file": [r["source_id"] for r in raw], "line": [1] * n, "format": [r["format"] for r in raw],
        "code_language": [None] * n, "declared_language": ["en"] * n,
    }, schema=RECORD_SCHEMA)
    docs = normalize(frame, NormalizeConfig()).kept.select("doc_id", "source_id", "kind", "text")
    cache_dir.mkdir(parents=True, exist_ok=True)
    docs.write_parquet(cache)
    return docs


# --------------------------------------------------------------------------------------------------------- compare

def our_verdicts(docs):
    """Per document and family: "keep" or the first broken rule of that family, from our signals and rules."""
    import polars as pl

    from curation_platform.ops.filters import FiltersConfig
    from curation_platform.ops.quality_signals import quality_signals
    from curation_platform.rules import rule_failures

    signals = quality_signals(docs).kept
    failures = rule_failures(signals, FiltersConfig().rules()).with_columns(
        pl.col("rule").str.split(".").list.first().alias("family")
    )
    first = failures.sort("rule_order").group_by("doc_id", "family", maintain_order=True).agg(pl.col("rule").first())
    wide = docs.select("doc_id")
    for family in FAMILIES:
        part = first.filter(pl.col("family") == family).select("doc_id", pl.col("rule").alias(family))
        wide = wide.join(part, on="doc_id", how="left", maintain_order="left")
    return wide.with_columns(pl.col(FAMILIES).fill_null("keep")), signals


def compare(name: str, docs, theirs: list[dict[str, str]], examples: int) -> dict:
    import polars as pl

    ours, _ = our_verdicts(docs)
    their_frame = pl.DataFrame({f"dt_{f}": [row[f] for row in theirs] for f in FAMILIES})
    both = pl.concat([ours, their_frame, docs.select("source_id", "text")], how="horizontal")
    report = {"corpus": name, "documents": both.height, "families": {}}
    for family in FAMILIES:
        we_keep = pl.col(family) == "keep"
        dt_keep = pl.col(f"dt_{family}") == "keep"
        disagree = both.filter(we_keep != dt_keep)
        agreement = 1 - disagree.height / both.height
        causes = (
            disagree.select(pl.when(pl.col(family) == "keep").then(pl.format("dt:{}", pl.col(f"dt_{family}")))
                            .otherwise(pl.format("ours:{}", pl.col(family))).alias("cause"))
            .group_by("cause").len().sort("len", "cause", descending=[True, False])
        )
        report["families"][family] = {
            "agreement": round(agreement, 4),
            "kept_ours": int(both.select(we_keep.sum()).item()),
            "kept_datatrove": int(both.select(dt_keep.sum()).item()),
            "top_disagreements": dict(zip(causes["cause"].head(6), causes["len"].head(6))),
            "examples": [
                {"source_id": r["source_id"], "ours": r[family], "datatrove": r[f"dt_{family}"],
                 "text": r["text"][:200]}
                for r in disagree.head(examples).iter_rows(named=True)
            ],
        }
    return report


def print_report(reports: list[dict]) -> None:
    print(f"{'corpus':10} {'docs':>6} " + " ".join(f"{f:>18}" for f in FAMILIES))
    for r in reports:
        cells = " ".join(f"{r['families'][f]['agreement']:>18.4f}" for f in FAMILIES)
        print(f"{r['corpus']:10} {r['documents']:>6} {cells}")
    for r in reports:
        for f in FAMILIES:
            fam = r["families"][f]
            print(f"\n[{r['corpus']} / {f}] agreement {fam['agreement']:.4f}, kept ours {fam['kept_ours']}, "
                  f"kept DataTrove {fam['kept_datatrove']}; disagreements: {fam['top_disagreements']}")
            for ex in fam["examples"]:
                snippet = ex["text"].replace("\n", " | ")[:140]
                print(f"  - {ex['source_id']}: ours={ex['ours']} datatrove={ex['datatrove']}: {snippet}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", default="manpages,pydocs", help="comma-separated: " + ", ".join(BUILDERS))
    parser.add_argument("--max-docs", type=int, default=1500, help="documents per corpus (an even sample)")
    parser.add_argument("--cache-dir", type=Path,
                        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                        / "curation_platform" / "parity")
    parser.add_argument("--oracle-python", default=None,
                        help="python of a separate venv with datatrove and spacy installed")
    parser.add_argument("--examples", type=int, default=3, help="disagreeing examples shown per family")
    parser.add_argument("--out", type=Path, default=None, help="write the report as JSON to this file")
    parser.add_argument("--oracle", nargs=2, metavar=("IN_JSONL", "OUT_JSONL"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.oracle:
        _oracle_main(*args.oracle)
        return 0
    reports = []
    for name in [c.strip() for c in args.corpora.split(",") if c.strip()]:
        if name not in BUILDERS:
            raise SystemExit(f"unknown corpus {name!r}; choose from {', '.join(BUILDERS)}")
        docs = load_corpus(name, args.max_docs, args.cache_dir)
        # DataTrove's verdicts depend only on the texts: cached beside the corpus (delete to recompute).
        verdict_cache = args.cache_dir / f"{name}-{args.max_docs}.datatrove.jsonl"
        if verdict_cache.exists():
            theirs = [json.loads(line) for line in verdict_cache.read_text(encoding="utf-8").splitlines()]
        else:
            theirs = oracle_verdicts(docs["text"].to_list(), args.oracle_python)
            if theirs is None:
                raise SystemExit("DataTrove is not importable here: install it in a separate venv "
                                 "(pip install datatrove spacy polars) and pass --oracle-python VENV/bin/python")
            verdict_cache.write_text("".join(json.dumps(row) + "\n" for row in theirs), encoding="utf-8")
        reports.append(compare(name, docs, theirs, args.examples))
    print_report(reports)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(reports, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    target_met = all(fam["agreement"] >= TARGET for r in reports for fam in r["families"].values())
    print(f"\ntarget >= {TARGET} per family on every corpus: {'met' if target_met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
