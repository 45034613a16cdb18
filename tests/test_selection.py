"""Release selection: domains, quotas, mixture and epochs, budget, synthetic caps, train/validation split, curriculum.

Releases are staged with the engine function the release asset calls (``release.stage_release``) over a small
workspace of curated drops written directly; every promise is checked on the written shards, with token counts
re-computed by the ``tokenizers`` library (not by ``release.count_tokens`` or the selection code).
"""

from __future__ import annotations

import json
import random

import polars as pl
import pytest
from tokenizers import Tokenizer

from curation_platform.audit import release_gate
from curation_platform.config import CurationConfig
from curation_platform.pipeline import FINAL_STAGE
from curation_platform.release import select_release, stage_release
from curation_platform.selection import domain_expr
from curation_platform.workspace import Workspace, resolve_resource, write_parquet_atomic

WORDS = ["river", "stone", "light", "garden", "number", "paper", "window", "market", "winter", "engine", "music",
         "forest", "table", "letter", "bridge", "island", "mountain", "silver", "yellow", "morning"]
SYNTHETIC_PROVENANCE = json.dumps({"description": "generated", "generator": {"model": "tiny-gen", "terms": "mit"}})
REAL_PROVENANCE = json.dumps({"description": "collected"})

# drop: (source, kind, license, language, documents, synthetic)
DROPS = {
    "2026-01-web": ("web-crawl", "web", "MIT", "en", 12, False),
    "2026-02-code": ("code-repo", "code", "Apache-2.0", "en", 5, False),
    "2026-03-forum": ("forum", "text", "BSD-3-Clause", "en", 12, False),
    "2026-04-german": ("news-de", "web", "MIT", "de", 10, False),
    "2026-05-synthetic": ("synth", "web", "MIT", "en", 20, True),
}


def _tokens(texts: list[str]) -> list[int]:
    tokenizer = Tokenizer.from_file(str(resolve_resource(CurationConfig().release.tokenizer, "release.tokenizer")))
    return [len(e.ids) for e in tokenizer.encode_batch(texts)]


def _workspace(root) -> Workspace:
    """Curated drops (the final stage's output) with texts of 15 to 60 words and a spread of quality scores."""
    ws = Workspace(root)
    rnd = random.Random(5)
    for drop, (source, kind, license, language, n, synthetic) in DROPS.items():
        ws.register_drop(drop, root)
        texts = [" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(15, 60))) + f" {drop} {i}." for i in range(n)]
        ids = [f"{drop[-4:]}{i:03d}" for i in range(n)]
        write_parquet_atomic(pl.DataFrame({
            "doc_id": ids, "source_id": [str(i) for i in range(n)], "drop": [drop] * n, "source": [source] * n,
            "license": [license] * n, "kind": [kind] * n, "language": [language] * n, "text": texts,
            "quality_score": [round(rnd.random(), 3) for _ in range(n)],
            "provenance": [SYNTHETIC_PROVENANCE if synthetic else REAL_PROVENANCE] * n, "content_hash": ids,
        }, schema_overrides={"language": pl.String}), ws.stage_path(FINAL_STAGE, drop))
    return ws


def _cfg(**release) -> CurationConfig:
    return CurationConfig.model_validate({"versioning": {"enabled": False}, "release": release})


def _stage(ws: Workspace, cfg: CurationConfig):
    staged = stage_release(ws, cfg, FINAL_STAGE, list(DROPS), [], [], {})
    shards = pl.concat([pl.read_parquet(p).with_columns(pl.lit(p.name).alias("_file")) for p in staged.shards],
                       how="diagonal_relaxed")
    shards = shards.with_columns(pl.Series("tokens", _tokens(shards["text"].to_list())))
    verdicts = pl.read_parquet(staged.directory / "release_verdicts.parquet")
    return staged, shards, verdicts


DOMAINS = {"code": {"kind": ["code"]}, "web-en": {"kind": ["web", "text"], "language": ["en"]}}
CAPS = {
    "domains": DOMAINS, "default_domain": "other", "token_budget": 2000,
    "mixture": {"web-en": 0.6, "code": 0.3, "other": 0.1}, "max_epochs": 1, "source_max_epochs": {"code-repo": 3},
    "quotas": {"source": {"forum": {"max_share": 0.08}}, "license": {"BSD-3-Clause": {"max_tokens": 100}},
               "language": {"de": {"max_tokens": 120}}},
    "synthetic_cap": {"overall": 0.1, "per_domain": {"web-en": 0.12}}, "validation_fraction": 0.1, "seed": 7,
    "shard_max_docs": 16,
}


@pytest.fixture(scope="module")
def capped(tmp_path_factory):
    ws = _workspace(tmp_path_factory.mktemp("capped"))
    return ws, _stage(ws, _cfg(**CAPS))


def test_domain_expr_applies_the_first_matching_rule_then_the_default():
    docs = pl.DataFrame({"kind": ["code", "web", "web", "text", "chat"], "source": ["a", "a", "b", "c", "d"],
                         "language": [None, "en", "de", "en", "en"]})
    mapped = docs.with_columns(domain_expr(_cfg(domains={**DOMAINS, "chat": {"source": ["d"]}})))["domain"]
    assert mapped.to_list() == ["code", "web-en", "web", "web-en", "chat"]  # no default domain: the kind
    named = docs.with_columns(domain_expr(_cfg(domains=DOMAINS, default_domain="other")))["domain"]
    assert named.to_list() == ["code", "web-en", "other", "web-en", "other"]


def test_budget_quotas_mixture_and_synthetic_caps_hold_on_the_recounted_shards(capped):
    _, (_, shards, verdicts) = capped
    assert shards["tokens"].to_list() == shards["token_count"].to_list()
    tokens = shards["tokens"]
    budget = CAPS["token_budget"]
    assert tokens.sum() <= budget

    def by(column: str) -> dict:
        return dict(shards.group_by(column).agg(pl.col("tokens").sum()).iter_rows())

    assert by("source").get("forum", 0) <= 0.08 * budget
    assert by("license").get("BSD-3-Clause", 0) <= 100
    assert by("language").get("de", 0) <= 120
    weights = CAPS["mixture"]
    for domain, got in by("domain").items():
        assert got <= budget * weights[domain] / sum(weights.values()), domain
    synthetic = shards["provenance"].str.contains('"generator"')
    assert tokens.filter(synthetic).sum() <= 0.1 * tokens.sum()
    web = shards["domain"] == "web-en"
    assert tokens.filter(synthetic & web).sum() <= 0.12 * tokens.filter(web).sum()
    assert tokens.filter(synthetic).sum() > 0  # synthetic documents were added up to the cap, not all dropped
    # Up-sampling: the code domain is short of its target and repeats whole documents, at most 3 epochs.
    epochs = shards.group_by("doc_id", "source").agg(pl.col("epoch").sort(), pl.len().alias("n"))
    code = epochs.filter(pl.col("source") == "code-repo")
    assert code["n"].max() > 1 and code["n"].max() <= 3
    assert epochs.filter(pl.col("source") != "code-repo")["n"].max() == 1
    assert all(e == list(range(len(e))) for e in epochs["epoch"].to_list())
    # Every cap bound: each rule left documents out, each with a ledger row naming it.
    rules = set(verdicts["rule"])
    assert {"selection.quota.source", "selection.quota.license", "selection.quota.language",
            "selection.mixture", "selection.synthetic_cap"} <= rules


def test_every_candidate_is_released_or_has_exactly_one_release_ledger_row(capped):
    ws, (staged, shards, verdicts) = capped
    candidates = {i for drop in DROPS for i in pl.read_parquet(ws.stage_path(FINAL_STAGE, drop))["doc_id"]}
    released = set(shards["doc_id"])
    left_out = verdicts.filter(pl.col("verdict") == "drop")
    assert left_out["doc_id"].n_unique() == left_out.height
    assert released.isdisjoint(left_out["doc_id"]) and released | set(left_out["doc_id"]) == candidates
    report = staged.card["selection"]
    assert report["splits"]["train"]["rows"] + report["splits"]["validation"]["rows"] == shards.height
    assert sum(d["selected_tokens"] for d in report["domains"].values()) == shards["tokens"].sum()
    assert sum(d["repeated_tokens"] for d in report["domains"].values()) == int(
        shards.filter(pl.col("epoch") > 0)["tokens"].sum())
    assert report["sources"]["code-repo"]["max_epochs"] == shards.filter(pl.col("source") == "code-repo")[
        "epoch"].max() + 1


def test_shards_are_named_by_split_and_the_release_gate_passes(capped):
    _, (staged, shards, _) = capped
    names = sorted(shards["_file"].unique())
    assert names[0] == "train-00000.parquet" and "validation-00000.parquet" in names
    assert all(n.startswith(("train-", "validation-")) for n in names)
    assert shards.group_by("_file").len()["len"].max() <= CAPS["shard_max_docs"]
    validation = set(shards.filter(pl.col("_file").str.starts_with("validation"))["doc_id"])
    assert validation and validation.isdisjoint(shards.filter(pl.col("_file").str.starts_with("train"))["doc_id"])
    assert shards.filter(pl.col("doc_id").is_in(list(validation)))["epoch"].max() == 0
    residual = pl.DataFrame({"doc_id": ["x"], "residual_pii": [0]})
    results = {r.name: r for r in release_gate(_cfg(**CAPS), staged.directory, residual)}
    assert all(r.passed for r in results.values()), {n: r.description for n, r in results.items()}


def test_selection_is_deterministic_given_the_seed(capped, tmp_path):
    _, (first, shards, _) = capped
    ws = _workspace(tmp_path)
    again, _, _ = _stage(ws, _cfg(**CAPS))
    assert [p.name for p in again.shards] == [p.name for p in first.shards]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(again.shards, first.shards))
    _, reseeded, _ = _stage(ws, _cfg(**{**CAPS, "seed": 8}))
    def validation(frame: pl.DataFrame) -> set:
        return set(frame.filter(pl.col("_file").str.starts_with("validation"))["doc_id"])

    assert validation(reseeded) != validation(shards)


def test_curriculum_orders_shards_by_the_signal_and_records_each_range(tmp_path):
    ws = _workspace(tmp_path)
    staged, _, _ = _stage(ws, _cfg(curriculum={"signal": "quality_score", "order": "asc"},
                                        validation_fraction=0.0, shard_max_docs=10))
    train = sorted(p.name for p in staged.shards)
    assert len(train) > 2 and all(n.startswith("train-") for n in train)
    in_order = pl.concat([pl.read_parquet(staged.directory / "shards" / n) for n in train])["quality_score"]
    assert in_order.to_list() == sorted(in_order.to_list())  # across drops and shards
    index = staged.card["selection"]["shards"]
    assert [s["shard"] for s in index] == train
    for entry in index:
        scores = pl.read_parquet(staged.directory / "shards" / entry["shard"])["quality_score"]
        assert (entry["signal_min"], entry["signal_max"]) == (scores.min(), scores.max())
        assert entry["documents"] == scores.len()


def test_synthetic_documents_fill_room_and_never_replace_real_ones():
    # Synthetic documents score higher, yet with room for 120 tokens the three real documents (40 each) ship.
    n = 6
    docs = pl.DataFrame({
        "doc_id": [f"r{i}" for i in range(3)] + [f"s{i}" for i in range(3)], "kind": ["web"] * n,
        "license": ["MIT"] * n, "quality_score": [0.2, 0.3, 0.4, 0.9, 0.95, 0.99],
        "text": [" ".join(["word"] * 40)] * 3 + [" ".join(["word"] * 10 + [f"s{i}"]) for i in range(3)],
        "provenance": [REAL_PROVENANCE] * 3 + [SYNTHETIC_PROVENANCE] * 3, "content_hash": [str(i) for i in range(n)]})
    full = select_release(docs, _cfg(token_budget=120, validation_fraction=0.0))
    assert sorted(full.kept["doc_id"]) == ["r0", "r1", "r2"]
    assert set(full.verdicts.filter(pl.col("rule") == "selection.budget")["doc_id"]) == {"s0", "s1", "s2"}
    # With room left, synthetic documents are added, best first, up to the cap: 25% of (120 + s) allows s <= 40.
    roomy = select_release(docs, _cfg(token_budget=400, validation_fraction=0.0, synthetic_cap={"overall": 0.25}))
    assert sorted(roomy.kept["doc_id"]) == ["r0", "r1", "r2", "s0", "s1", "s2"]
    tight = select_release(docs, _cfg(validation_fraction=0.0, synthetic_cap={"overall": 0.15}))
    # 15% of (120 + s) allows s <= 21: only the best synthetic document fits (each has more than 10 tokens).
    assert sorted(tight.kept["doc_id"]) == ["r0", "r1", "r2", "s2"]
    assert tight.verdicts.filter(pl.col("rule") == "selection.synthetic_cap")["doc_id"].sort().to_list() == [
        "s0", "s1"]


def test_without_a_budget_shares_are_of_all_candidates_and_the_mixture_keeps_the_natural_total():
    # Six web documents of 40 tokens, two code documents of 20: 280 candidate tokens.
    n = 8
    docs = pl.DataFrame({
        "doc_id": [f"w{i}" for i in range(6)] + ["c0", "c1"], "kind": ["web"] * 6 + ["code"] * 2,
        "source": ["s"] * n, "license": ["MIT"] * n, "quality_score": [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.9, 0.8],
        "text": [" ".join(["word"] * 40)] * 6 + [" ".join(["word"] * 20)] * 2, "provenance": ["{}"] * n,
        "content_hash": [str(i) for i in range(n)]})
    quota = select_release(docs, _cfg(validation_fraction=0.0, quotas={"domain": {"web": {"max_share": 0.5}}}))
    # 50% of 280 = 140 tokens of web: the three best web documents.
    assert sorted(quota.kept["doc_id"]) == ["c0", "c1", "w0", "w1", "w2"]
    assert set(quota.verdicts["rule"]) == {"selection.quota.domain"}
    mixed = select_release(docs, _cfg(validation_fraction=0.0, mixture={"web": 0.5, "code": 0.5},
                                      source_max_epochs={"s": 4}))
    # Targets are half of the 280 tokens each: web down-sampled to 120 (a fourth document would make 160), code
    # up-sampled to 140 (7 of its 8 possible units of 20 tokens: c0 four times, c1 three times).
    kept = mixed.kept.group_by("kind").agg(pl.col("token_count").sum(), pl.col("epoch").max())
    assert dict(kept.select("kind", "token_count").iter_rows()) == {"web": 120, "code": 140}
    assert dict(kept.select("kind", "epoch").iter_rows()) == {"web": 0, "code": 3}
    assert mixed.kept.filter(pl.col("doc_id") == "c1")["epoch"].sort().to_list() == [0, 1, 2]


# --- train/validation split and near-duplicate clusters ---------------------------------------------------------


def _chains(n: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``n`` near-duplicate chains a~b~c (verified pairs a-b and b-c; a and c are not near copies of each other),
    so dedup ships a and c of every chain and leaves b out."""
    rows, pairs = [], []
    for i in range(n):
        for j, part in enumerate("abc"):
            rows.append({"doc_id": f"{part}{i:03d}", "drop": "d", "drop_order": j, "source": "s",
                         "license": "MIT", "kind": "web", "language": "en", "quality_score": 0.5,
                         "provenance": "{}", "text": f"document {part} of chain {i}", "content_hash": f"{part}{i}"})
        pairs += [{"doc_id": f"b{i:03d}", "duplicate_of": f"a{i:03d}", "value": 0.85},
                  {"doc_id": f"c{i:03d}", "duplicate_of": f"b{i:03d}", "value": 0.85}]
    return pl.DataFrame(rows), pl.DataFrame(pairs)


def test_validation_near_duplicates_never_land_in_train():
    docs, pairs = _chains(40)
    result = select_release(docs, _cfg(validation_fraction=0.5, seed=3), pairs)
    kept = result.kept
    assert set(kept["doc_id"].str.slice(0, 1)) == {"a", "c"}  # dedup left the middle of every chain out
    split = dict(zip(kept["doc_id"], kept["split"]))
    assert 0 < sum(s == "validation" for s in split.values()) < len(split)
    # Independently of the selection: the cluster of each validation document (its chain, through b) has no
    # document in train.
    for i in range(40):
        ends = {split[f"a{i:03d}"], split[f"c{i:03d}"]}
        assert len(ends) == 1, f"chain {i}: its ends ship in {ends}"


def test_an_exact_copy_links_clusters_across_the_split():
    # x1 (NC, not shipped) and x2 (MIT) are exact copies; y is a near copy recorded against x1 and z one recorded
    # against y. The release ships x2 (for x1) and z (y is x2's near duplicate through x1): one cluster.
    docs = pl.DataFrame({
        "doc_id": ["x1", "x2", "y", "z"], "drop": ["d1", "d2", "d3", "d4"], "drop_order": [0, 1, 2, 3],
        "source": ["s"] * 4, "license": ["CC-BY-NC-4.0", "MIT", "MIT", "MIT"], "kind": ["web"] * 4,
        "language": ["en"] * 4, "quality_score": [0.5] * 4, "provenance": ["{}"] * 4,
        "text": ["same", "same", "close", "closer"], "content_hash": ["h", "h", "g", "f"]})
    pairs = pl.DataFrame({"doc_id": ["y", "z"], "duplicate_of": ["x1", "y"], "value": [0.81, 0.82]})
    for seed in range(8):
        kept = select_release(docs, _cfg(validation_fraction=0.5, seed=seed), pairs).kept
        assert sorted(kept["doc_id"]) == ["x2", "z"]
        assert kept["split"].n_unique() == 1, seed


# --- the synthetic gate ---------------------------------------------------------------------------------------


def _shards_with_synthetic(tmp_path, synthetic_tokens: int, real_tokens: int, domain: str = "web"):
    staging = tmp_path / "staging"
    (staging / "shards").mkdir(parents=True)
    pl.DataFrame({
        "doc_id": ["real", "synthetic"], "source": ["s", "gen"], "drop": ["d1", "d2"], "source_id": ["1", "2"],
        "license": ["MIT", "MIT"], "kind": ["web", "web"], "language": ["en", "en"], "domain": ["web", domain],
        "epoch": [0, 0], "token_count": [real_tokens, synthetic_tokens], "text": ["a real text", "a generated text"],
        "provenance": [REAL_PROVENANCE, SYNTHETIC_PROVENANCE],
    }).write_parquet(staging / "shards" / "train-00000.parquet")
    return staging, pl.DataFrame({"doc_id": ["real", "synthetic"], "residual_pii": [0, 0]})


@pytest.mark.parametrize(("cap", "synthetic_tokens", "passes"), [
    ({"overall": 0.2}, 25, True),            # 25 / 125 = 0.2: at the cap
    ({"overall": 0.2}, 26, False),           # 26 / 126 > 0.2
    ({"per_domain": {"web": 0.1}}, 12, False),
    ({"per_domain": {"web": 0.1}}, 11, True),
])
def test_release_gate_fails_above_the_synthetic_cap(tmp_path, cap, synthetic_tokens, passes):
    staging, residual = _shards_with_synthetic(tmp_path, synthetic_tokens, 100)
    result = {r.name: r for r in release_gate(_cfg(synthetic_cap=cap), staging, residual)}["release.selection"]
    assert result.passed is passes, result.description


def test_release_gate_fails_on_a_domain_the_mapping_does_not_give(tmp_path):
    staging, residual = _shards_with_synthetic(tmp_path, 1, 100, domain="code")
    result = {r.name: r for r in release_gate(_cfg(), staging, residual)}["release.selection"]
    assert not result.passed and "mislabelled" in result.description
