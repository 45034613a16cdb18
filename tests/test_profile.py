"""Per-drop profile: distributions, frequent lines, outliers, chat conflicts and removals, on planted data."""

import json

import numpy as np
import polars as pl

from curation_platform.ledger import ledger_rows
from curation_platform.pipeline import FINAL_STAGE, STAGES
from curation_platform.plots import PNG_SIGNATURE
from curation_platform.profile import profile_drop, profile_markdown, write_drop_profile
from curation_platform.records import MESSAGES_DTYPE, verdict_frame
from tests.test_card import HandmadeLake, _text

BOILERPLATE = "Subscribe to our newsletter for weekly updates."


def _docs() -> pl.DataFrame:
    texts = [_text(i, 20 + 15 * i) + ("\n" + BOILERPLATE if i % 2 == 0 else "") for i in range(8)]
    texts[5] = "tiny."
    web = pl.DataFrame({
        "doc_id": [f"w{i}" for i in range(8)], "kind": "web", "language": ["en"] * 7 + ["fr"], "text": texts,
        "quality_score": [0.9, 0.8, 0.85, 0.7, 0.95, 0.88, 0.12, 0.6], "word_count": [len(t.split()) for t in texts],
    })
    def chat(doc_id: str, prompt: str, answer: str) -> dict:
        return {"doc_id": doc_id, "kind": "chat", "language": "en", "text": f"user: {prompt}\n\nassistant: {answer}",
                "quality_score": 0.8, "messages": [{"role": "user", "content": prompt},
                                                   {"role": "assistant", "content": answer}]}
    chats = pl.DataFrame([
        chat("c1", "Is the river safe to swim?", "Yes, in summer."),
        chat("c2", "is the river  safe to swim?", "No, never."),  # same prompt (case, spaces), other answer
        chat("c3", "What is a lantern?", "A lamp."),
        chat("c4", "What is a lantern?", "A lamp."),  # same answer: no conflict
    ], schema_overrides={"messages": MESSAGES_DTYPE})
    docs = pl.concat([web, chats], how="diagonal_relaxed")
    return docs.with_columns(pl.col("text").str.split(" ").list.len().cast(pl.Int64).alias("token_count"))


def _ledger(docs: pl.DataFrame) -> pl.DataFrame:
    kept = docs["doc_id"]
    inputs = pl.concat([kept, pl.Series(["gone1", "gone2", "bad"])])
    raw = ledger_rows(stage="raw_documents", drop="d", input_ids=inputs, run_id="t", config_hash="h",
                      verdicts=verdict_frame(pl.DataFrame({"doc_id": ["bad"], "verdict": ["quarantine"],
                                                           "rule": ["ingest.quarantined"]})))
    filtered = ledger_rows(stage="filtered", drop="d", input_ids=inputs.filter(inputs != "bad"), run_id="t",
                           config_hash="h", verdicts=verdict_frame(pl.DataFrame(
                               {"doc_id": ["gone1", "gone2"], "verdict": ["drop", "drop"],
                                "rule": ["gopher_quality.min_words", "c4.lorem_ipsum"]})))
    return pl.concat([raw, filtered])


def test_profile_finds_planted_lines_outliers_and_chat_conflicts():
    docs = _docs()
    data = profile_drop(docs, _ledger(docs), STAGES, "d", plots=False).data
    assert (data["documents"], data["input"]) == (12, 15)
    assert data["frequent_lines"][0] == {"line": BOILERPLATE, "documents": 4, "occurrences": 4}
    assert data["outliers"]["shortest"][0]["doc_id"] == "w5"
    assert data["outliers"]["longest"][0]["doc_id"] == "w7"
    assert data["outliers"]["lowest_score"][0]["doc_id"] == "w6"
    conflicts = data["chat_conflicts"]
    assert (conflicts["prompts"], conflicts["documents"]) == (1, 2)
    assert conflicts["examples"][0]["doc_ids"] == ["c1", "c2"]
    assert sorted(conflicts["examples"][0]["responses"]) == ["No, never.", "Yes, in summer."]
    assert {(r["stage"], r["rule"], r["documents"]) for r in data["removals"]} == {
        ("raw_documents", "ingest.quarantined", 1), ("filtered", "gopher_quality.min_words", 1),
        ("filtered", "c4.lorem_ipsum", 1)}
    assert data["by_language"] == [{"language": "en", "documents": 11, "tokens": int(docs["token_count"].sum()) - 
                                    int(docs.filter(pl.col("language") == "fr")["token_count"].sum())},
                                   {"language": "fr", "documents": 1,
                                    "tokens": int(docs.filter(pl.col("language") == "fr")["token_count"].sum())}]
    chars = docs["text"].str.len_chars().to_numpy()
    assert data["distributions"]["characters"]["p50"] == round(float(np.quantile(chars, 0.5)), 4)
    assert data["distributions"]["quality_score"]["min"] == 0.12
    # Signals no document has are left out; present ones are summarized.
    assert "word_count" in data["signals"] and "code_alnum_frac" not in data["signals"]
    markdown = profile_markdown(data, {})
    assert "## Chat prompts with conflicting responses" in markdown and BOILERPLATE in markdown


def test_profile_of_a_curated_drop_is_written_with_its_plots(tmp_path):
    lake = HandmadeLake(tmp_path)
    lake.drop("2026-01-news", "news", [{"id": f"n{i}", "text": _text(i, 30 + 20 * i)} for i in range(5)],
              removed={"short": ("filtered", "gopher_quality.min_words")})
    profile = write_drop_profile(lake.ws, FINAL_STAGE, STAGES, "2026-01-news", lake.cfg.release.tokenizer)
    folder = lake.ws.root / "profiles" / "2026-01-news"
    stored = json.loads((folder / "profile.json").read_text())
    assert stored["documents"] == 5 and stored["tokens"] > 0 and stored["input"] == 6
    assert set(profile.plots) == {"characters", "tokens", "quality_score", "languages", "removals"}
    for name in profile.plots:
        png = (folder / f"{name}.png").read_bytes()
        assert png[:8] == PNG_SIGNATURE and len(png) > 2000
        assert f"]({name}.png)" in (folder / "profile.md").read_text()


def test_the_release_reuses_the_token_counts_the_drop_profile_made(tmp_path, monkeypatch):
    # The profile and the release count tokens the same way (the training text), so a release rebuild after a
    # new drop tokenizes only that drop, not every drop of the history again.
    import curation_platform.release as release

    lake = HandmadeLake(tmp_path)
    for n in range(2):
        lake.drop(f"d{n}", "news", [{"id": f"n{i}", "text": _text(i, 30 + 20 * i)} for i in range(4)])
    counted = []
    real = release.count_tokens
    monkeypatch.setattr(release, "count_tokens", lambda texts, path: counted.append(len(texts)) or real(texts, path))
    profiles = [write_drop_profile(lake.ws, FINAL_STAGE, STAGES, f"d{n}", lake.cfg.release.tokenizer,
                                   lake.cfg.formatting) for n in range(2)]
    metadata = release.curated_metadata(lake.ws, FINAL_STAGE, ["d0", "d1"], lake.cfg.release.tokenizer,
                                        formatting=lake.cfg.formatting)

    assert counted == [4, 4]  # once per drop, by the profiles
    assert metadata["token_count"].sum() == sum(p.data["tokens"] for p in profiles) > 0
