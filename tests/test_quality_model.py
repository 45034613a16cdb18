"""The learned quality classifier: held-out AUC recomputed independently, deterministic scoring, the CLI trains
and DVC tracks the model, the shipped default model is what its script builds."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import xxhash
import yaml
from sklearn.metrics import roc_auc_score

from curation_platform.ops.score import ScoreConfig, score_documents
from curation_platform.quality_model import TrainParams, load_model, read_texts, train_model
from tests.conftest import REPO, run_cli

DEFAULT_MODEL = "pkg://curation_platform/resources/quality"


def _corpus(n: int = 240) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Positives: passages of the Python language reference (pydoc topics, real prose); negatives: the same words
    shuffled (word salad) and keyword spam, so words alone do not separate the classes."""
    from pydoc_data.topics import topics

    words = " ".join(topics[k] for k in sorted(topics)).split()
    passages = [" ".join(words[i:i + 80]) for i in range(0, min(len(words), n * 80), 80)]
    rng = np.random.default_rng(7)
    salad = [" ".join(np.array(p.split())[rng.permutation(80)]) for p in passages[: n // 2]]
    spam = [" ".join(rng.choice(["buy", "cheap", "best", "online", "shoes", "casino", "free", "click", "here",
                                 "deal", "sale", "now"], 60)) for _ in range(n // 2)]
    return (pl.DataFrame({"text": passages, "origin": "pydoc"}),
            pl.DataFrame({"text": salad + spam, "origin": "generated"}))


def _heldout(texts: list[str], fraction: float, seed: int) -> np.ndarray:
    # The documented rule, re-implemented with the xxhash library (not the Polars hash the code uses).
    return np.array([int(xxhash.xxh3_128_hexdigest(f"{seed}\0{t}".encode())[:8], 16) % 10_000 < fraction * 10_000
                     for t in texts])


def test_classifier_reaches_the_reported_auc_on_its_heldout_split(tmp_path):
    positives, negatives = _corpus()
    card = train_model(positives, negatives, tmp_path / "m", TrainParams(seed=5, holdout_fraction=0.25))
    texts = positives["text"].to_list() + negatives["text"].to_list()
    labels = np.array([1] * positives.height + [0] * negatives.height)
    heldout = _heldout(texts, 0.25, 5)
    assert heldout.sum() == card["documents"]["heldout"] and 0 < labels[heldout].sum() < heldout.sum()
    proba = load_model(str(tmp_path / "m")).predict_proba([t for t, h in zip(texts, heldout) if h])
    auc = roc_auc_score(labels[heldout], proba)
    assert auc == pytest.approx(card["heldout"]["roc_auc"], abs=1e-6)
    assert auc >= 0.9
    # Precision at the kept fraction: the top `kept` held-out documents by probability.
    kept = card["heldout"]["kept"]
    top = np.argsort(-proba, kind="stable")[:kept]
    assert labels[heldout][top].mean() == pytest.approx(card["heldout"]["precision_at_keep_fraction"], abs=1e-6)
    assert card["sha256"] == hashlib.sha256((tmp_path / "m" / card["model_file"]).read_bytes()).hexdigest()


def test_scoring_with_the_model_is_deterministic_batched_and_keeps_the_heuristic(tmp_path, monkeypatch):
    positives, negatives = _corpus(120)
    train_model(positives, negatives, tmp_path / "m", TrainParams(seed=1))
    texts = positives["text"].head(3).to_list() + negatives["text"].head(3).to_list() + ["def f():\n    return 1"]
    docs = pl.DataFrame({"doc_id": [f"d{i}" for i in range(7)], "source": "s", "kind": ["web"] * 6 + ["code"],
                         "text": texts, "language_score": [0.9] * 7})
    cfg = ScoreConfig(model=str(tmp_path / "m"))
    first, second = score_documents(docs, cfg).kept, score_documents(docs.reverse(), cfg).kept.reverse()
    assert first["quality_score"].to_list() == second["quality_score"].to_list()
    model = load_model(str(tmp_path / "m"))
    one_by_one = [float(model.predict_proba([t])[0]) for t in texts[:6]]
    assert first["quality_score"].head(6).to_list() == one_by_one
    monkeypatch.setattr("curation_platform.quality_model.BATCH_DOCUMENTS", 2)  # batches of two give the same
    assert score_documents(docs, cfg).kept["quality_score"].to_list() == first["quality_score"].to_list()
    assert min(one_by_one[:3]) > max(one_by_one[3:])  # held-in prose over spam and salad
    # Code is not a model kind: it keeps the heuristic score, which stays a column for every document.
    assert first["quality_score"][6] == first["heuristic_score"][6]
    assert first["heuristic_score"].null_count() == 0


def test_cli_trains_reports_and_tracks_the_model_with_dvc(tmp_path):
    positives, negatives = _corpus(120)
    positives.select("text").write_parquet(tmp_path / "pos.parquet")
    (tmp_path / "neg.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in negatives["text"]))
    ws = tmp_path / "data"
    code, output = run_cli("quality", "train", "--positive", str(tmp_path / "pos.parquet"), "--negative",
                           str(tmp_path / "neg.jsonl"), "--seed", "2", "--workspace", str(ws),
                           "--config", str(REPO / "curation.yaml"))
    assert code == 0, output
    card = json.loads((ws / "models" / "quality" / "model_card.json").read_text())
    assert f"held-out ROC-AUC {card['heldout']['roc_auc']:.4f}" in output
    assert card["training_data"]["positive"] == [{"input": str(tmp_path / "pos.parquet"), "documents": 120}]
    dvc_file = yaml.safe_load((ws / "models" / "quality.dvc").read_text())
    assert dvc_file["meta"]["sha256"] == card["sha256"] and dvc_file["outs"][0]["nfiles"] == 2
    # The pushed remote holds the model file under its md5 (DVC's content-addressed layout).
    md5 = hashlib.md5((ws / "models" / "quality" / "model.npz").read_bytes()).hexdigest()
    assert (ws / "dvc-remote" / "files" / "md5" / md5[:2] / md5[2:]).is_file()


def test_bad_training_input_is_one_line_naming_file_and_line(tmp_path):
    bad = tmp_path / "neg.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": broken\n')
    code, output = run_cli("quality", "train", "--positive", str(bad), "--negative", str(bad), "--no-version",
                           "--workspace", str(tmp_path / "data"), "--config", str(REPO / "curation.yaml"))
    assert code == 1 and f"{bad}, line 2: not valid JSON" in output and "Traceback" not in output
    with pytest.raises(Exception, match="neither a file, a directory nor a curated drop"):
        read_texts("no-such-drop", tmp_path / "data")


def test_a_drop_name_reads_its_curated_text(tmp_path):
    from curation_platform.workspace import Workspace, write_parquet_atomic

    ws = Workspace(tmp_path / "data")
    write_parquet_atomic(pl.DataFrame({"doc_id": ["a", "b", "c"], "text": ["one text", "", "two text"]}),
                         ws.stage_path("decontaminated", "2026-01-docs"))
    frame = read_texts("2026-01-docs", ws.root)
    assert frame["text"].to_list() == ["one text", "two text"] and set(frame["origin"]) == {"2026-01-docs"}


def test_shipped_default_model_is_what_its_script_builds():
    spec = importlib.util.spec_from_file_location("quality_default_model", REPO / "bench" / "quality_default_model.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    positives, negatives, _ = builder.training_frames()
    model = load_model(DEFAULT_MODEL)
    card = model.card
    assert card["documents"]["positive"] == positives.height and card["size_bytes"] < 3_000_000
    texts = positives["text"].to_list() + negatives["text"].to_list()
    labels = np.array([1] * positives.height + [0] * negatives.height)
    heldout = _heldout(texts, card["params"]["holdout_fraction"], card["seed"])
    proba = model.predict_proba([t for t, h in zip(texts, heldout) if h])
    assert roc_auc_score(labels[heldout], proba) == pytest.approx(card["heldout"]["roc_auc"], abs=1e-6)
    assert card["training_data"]["positive"]["license"] == "PSF-2.0"


def test_release_card_names_the_model_its_training_data_and_auc():
    from curation_platform.config import CurationConfig
    from curation_platform.records import VERDICT_SCHEMA
    from curation_platform.release import build_card

    cfg = CurationConfig.model_validate({"scoring": {"model": DEFAULT_MODEL}})
    selected = pl.DataFrame(schema={"doc_id": pl.String, "license": pl.String, "token_count": pl.Int64,
                                    "provenance": pl.String, "kind": pl.String, "language": pl.String,
                                    "source": pl.String, "drop": pl.String})
    card = build_card("latest", cfg, selected, [], pl.DataFrame(schema=VERDICT_SCHEMA), {})["quality_model"]
    shipped = json.loads((REPO / "curation_platform" / "resources" / "quality" / "model_card.json").read_text())
    assert card["sha256"] == hashlib.sha256(
        (REPO / "curation_platform" / "resources" / "quality" / "model.npz").read_bytes()).hexdigest()
    assert card["heldout"]["roc_auc"] == shipped["heldout"]["roc_auc"]
    assert card["training_data"]["negative"]["license"] == "Apache-2.0"
    assert "quality_model" not in build_card("latest", CurationConfig(), selected, [],
                                             pl.DataFrame(schema=VERDICT_SCHEMA), {})


def test_retraining_the_model_at_the_same_path_makes_curated_drops_stale(tmp_path):
    from curation_platform.config import CurationConfig

    positives, negatives = _corpus(80)
    cfg = CurationConfig.model_validate({"scoring": {"model": str(tmp_path / "m")}})
    train_model(positives, negatives, tmp_path / "m", TrainParams(seed=1))
    first = cfg.drop_stages_hash
    assert cfg.drop_stages_hash == first  # stable while the model is unchanged
    train_model(positives, negatives, tmp_path / "m", TrainParams(seed=2))
    assert cfg.drop_stages_hash != first
    assert CurationConfig().drop_stages_hash == CurationConfig().drop_stages_hash
