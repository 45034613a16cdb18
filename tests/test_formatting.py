"""SFT formatting: every chat shape the readers accept becomes the same ``messages``; invalid conversations are
quarantined with their rule; templates render exactly; token counts are the tokenizer's own."""

from __future__ import annotations

import json

import polars as pl
import pytest
from tokenizers import Tokenizer

from curation_platform.errors import ConfigError
from curation_platform.formatting import (CHATML_JINJA, FormattingConfig, formatting_card, render_messages,
                                         training_text)
from curation_platform.readers import IngestConfig, read_drop
from curation_platform.records import MESSAGES_DTYPE
from curation_platform.config import ReleaseConfig
from curation_platform.release import _write_shards, curated_metadata
from curation_platform.workspace import Workspace, resolve_resource, write_parquet_atomic
from tests.test_readers import jsonl, make_drop

SYSTEM = "You answer in one sentence."
QUESTION, CONTEXT, ANSWER = "Name the largest planet.", "Solar system, 2024 edition.", "Jupiter is the largest planet."
EXPECTED = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"{QUESTION}\n\n{CONTEXT}"},
            {"role": "assistant", "content": ANSWER}]
USER = f"{QUESTION}\n\n{CONTEXT}"

SHAPES = {
    "openai": {"messages": EXPECTED},
    "sharegpt": {"conversations": [{"from": "system", "value": SYSTEM}, {"from": "human", "value": USER},
                                   {"from": "gpt", "value": ANSWER}]},
    "sharegpt-system-key": {"system": SYSTEM, "conversations": [{"from": "Human", "value": USER},
                                                                {"from": "GPT", "value": ANSWER}]},
    "prompt-response": {"system": SYSTEM, "prompt": USER, "response": ANSWER},
    "alpaca": {"system": SYSTEM, "instruction": QUESTION, "input": CONTEXT, "output": ANSWER},
}


def _read(tmp_path, records, **manifest):
    drop = make_drop(tmp_path, {"chat.jsonl": jsonl(*records)}, kind="chat", **manifest)
    return read_drop(drop, IngestConfig())


def test_every_chat_shape_normalizes_to_the_same_messages(tmp_path):
    result = _read(tmp_path, [{"id": name, **record} for name, record in SHAPES.items()], id_field="id")
    assert result.quarantine.is_empty(), result.quarantine["reason"].to_list()
    by_id = dict(zip(result.records["source_id"], result.records["messages"].to_list()))
    assert by_id == {name: EXPECTED for name in SHAPES}
    # Alpaca without input: the user turn is the instruction alone.
    alone = _read(tmp_path / "b", [{"instruction": QUESTION, "input": " ", "output": ANSWER}]).records
    assert alone["messages"].to_list() == [[{"role": "user", "content": QUESTION},
                                            {"role": "assistant", "content": ANSWER}]]


@pytest.mark.parametrize(("turns", "rule"), [
    ([("user", "Hi"), ("robot", "Hello")], "chat.unknown_role"),
    ([("user", "Hi"), ("assistant", " "), ("user", "Hm?"), ("assistant", "Yes")], "chat.empty_turn"),
    ([("user", "Hi"), ("system", "Be brief."), ("assistant", "Hello")], "chat.system_not_first"),
    ([("user", "Hi"), ("user", "Anyone?"), ("assistant", "Hello")], "chat.not_alternating"),
    ([("assistant", "Welcome!"), ("user", "Hi"), ("assistant", "Hello")], "chat.not_alternating"),
    ([("system", "Be brief."), ("user", "Hi")], "chat.not_ending_with_assistant"),
])
def test_invalid_conversations_are_quarantined_with_their_rule(tmp_path, turns, rule):
    bad = {"messages": [{"role": r, "content": c} for r, c in turns]}
    result = _read(tmp_path, [{"prompt": "ok?", "response": "ok"}, bad])
    assert result.records.height == 1
    [(line, reason)] = result.quarantine.select("line", "reason").rows()
    assert line == 2 and reason.startswith(rule + ":"), reason


CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "4"}]


def _messages(*conversations) -> pl.Series:
    return pl.Series("messages", list(conversations), dtype=MESSAGES_DTYPE)


def test_built_in_templates_render_exactly():
    messages = _messages(CONVERSATION, None)
    assert render_messages(messages, "chatml").to_list() == [
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
        "<|im_start|>assistant\n4<|im_end|>\n", None]
    assert render_messages(messages, "llama3")[0] == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>")
    assert render_messages(messages, "plain")[0] == "system: Be brief.\n\nuser: 2+2?\n\nassistant: 4"


def test_jinja_template_and_tokenizer_config_render_exactly(tmp_path):
    template = "{% for m in messages %}[{{ m['role'] | upper }}] {{ m['content'] }}\n{% endfor %}{{ eos_token }}"
    assert render_messages(_messages(CONVERSATION), template)[0] == "[SYSTEM] Be brief.\n[USER] 2+2?\n[ASSISTANT] 4\n"
    config = tmp_path / "tokenizer_config.json"
    config.write_text(json.dumps({"chat_template": template, "eos_token": {"content": "</s>"}}), encoding="utf-8")
    assert render_messages(_messages(CONVERSATION), str(config))[0].endswith("[ASSISTANT] 4\n</s>")
    # The vectorized chatml equals the Hugging Face chatml Jinja template on a batch of conversations.
    batch = _messages(CONVERSATION, CONVERSATION[1:], [{"role": "user", "content": "ß\n{x}"},
                                                       {"role": "assistant", "content": "ok"}])
    assert render_messages(batch, "chatml").to_list() == render_messages(batch, CHATML_JINJA).to_list()


def test_a_tokenizer_json_without_a_chat_template_is_a_clear_error():
    with pytest.raises(ConfigError, match="has no chat_template"):
        render_messages(_messages(CONVERSATION), "pkg://curation_platform/resources/gpt2_tokenizer.json")


def test_only_chat_documents_are_rendered():
    docs = pl.DataFrame({"kind": ["chat", "web", "chat"], "text": ["user: 2+2?", "A page.", "empty"],
                         "messages": [CONVERSATION, None, []]}, schema_overrides={"messages": MESSAGES_DTYPE})
    text = training_text(docs, FormattingConfig(chat_template="plain"))
    assert text.to_list() == ["system: Be brief.\n\nuser: 2+2?\n\nassistant: 4", "A page.", "empty"]


def test_release_token_counts_are_the_tokenizers_count_of_the_rendered_text(tmp_path):
    tokenizer = "pkg://curation_platform/resources/gpt2_tokenizer.json"
    ws = Workspace(tmp_path / "ws")
    drop = make_drop(tmp_path, {"a.jsonl": jsonl({"text": "x"})}, name="d1")
    ws.register_drop("d1", drop)
    docs = pl.DataFrame({
        "doc_id": ["c", "w"], "drop": ["d1", "d1"], "source": ["s", "s"], "license": ["MIT", "MIT"],
        "kind": ["chat", "web"], "text": ["system: Be brief.\n\nuser: 2+2?\n\nassistant: 4", "A short web page."],
        "messages": [CONVERSATION, None], "provenance": ["{}", "{}"],
    }, schema_overrides={"messages": MESSAGES_DTYPE})
    write_parquet_atomic(docs, ws.stage_path("decontaminated", "d1"))
    meta = curated_metadata(ws, "decontaminated", ["d1"], tokenizer, formatting=FormattingConfig())
    own = Tokenizer.from_file(str(resolve_resource(tokenizer, "release.tokenizer")))
    rendered = render_messages(_messages(CONVERSATION), "chatml")[0]
    assert dict(zip(meta["doc_id"], meta["token_count"])) == {
        "c": len(own.encode(rendered).ids), "w": len(own.encode("A short web page.").ids)}
    # The shard carries exactly the text that was counted.
    [shard], _ = _write_shards(ws, "decontaminated", meta, ReleaseConfig(), tmp_path / "staging", FormattingConfig())
    shipped = dict(pl.read_parquet(shard).select("doc_id", "text").iter_rows())
    assert shipped == {"c": rendered, "w": "A short web page."}
    # Another template is another count (the cache is keyed by it), not the cached one.
    plain = curated_metadata(ws, "decontaminated", ["d1"], tokenizer, formatting=FormattingConfig(chat_template="plain"))
    assert plain.filter(pl.col("doc_id") == "c")["token_count"][0] == len(own.encode(docs["text"][0]).ids)


def test_formatting_card_counts_the_selected_tokens():
    selected = pl.DataFrame({"kind": ["chat", "chat", "web"], "token_count": [10, 30, 100]})
    card = formatting_card(selected, FormattingConfig(), "tok.json")
    assert card["chat_template"] == "chatml" and card["documents_rendered"] == 2
    assert card["tokens"] == 140 and card["tokens_per_document"]["max"] == 100
    assert card["by_kind"] == {"chat": {"documents": 2, "tokens": 40}, "web": {"documents": 1, "tokens": 100}}
