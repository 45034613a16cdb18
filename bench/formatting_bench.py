"""Throughput of SFT formatting (chat shapes to messages, templates to text, token counts) and of the sandbox.

    .venv/bin/python bench/formatting_bench.py --conversations 20000 --candidates 40

Conversations are generated deterministically (2 to 6 turns of 20 to 60 words, a system turn in a third of them)
and written as four shapes (OpenAI messages, ShareGPT conversations, prompt/response, Alpaca instruction/output)
to one JSONL drop. Reported: ingest of that drop (records/s), rendering with the built-in chatml (Polars list
expressions) and with the same template as Jinja2 (one render per document), and the tokenizer count of the
rendered text. The sandbox part runs ``--candidates`` small solutions (a quarter of them wrong) with their tests,
sequentially and with the default pool, and reports candidates/s.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import yaml

from curation_platform.formatting import CHATML_JINJA, render_messages
from curation_platform.readers import IngestConfig, read_drop
from curation_platform.release import count_tokens
from curation_platform.sandbox import SandboxConfig, run_candidates

WORDS = ("the river valley farm wheat rain village school stone market bread cheese honey wool model data "
         "answer question number list function value return result first second later").split()


def _sentence(rng: np.random.Generator, n: int) -> str:
    return " ".join(WORDS[i] for i in rng.integers(len(WORDS), size=n)).capitalize() + "."


def _records(n: int, seed: int = 7) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        turns = [_sentence(rng, int(rng.integers(20, 60))) for _ in range(2 * int(rng.integers(1, 4)))]
        system = _sentence(rng, 8) if k % 3 == 0 else None
        shape = k % 4
        if shape == 0 or len(turns) > 2:
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
            if shape == 1:
                record = {"conversations": [{"from": {"user": "human", "assistant": "gpt"}.get(m["role"], m["role"]),
                                             "value": m["content"]} for m in messages]}
            else:
                record = {"messages": messages}
        elif shape == 2:
            record = {"prompt": turns[0], "response": turns[1]}
        else:
            record = {"instruction": turns[0], "input": "", "output": turns[1]}
        if system and "messages" not in record and "conversations" not in record:
            record["system"] = system
        out.append({"id": f"c{k}", **record})
    return out


def _timed(label: str, count: int, fn):
    start = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - start
    print(f"{label:<44} {count:>7} in {seconds:7.2f} s = {count / seconds:>10,.0f}/s")
    return value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conversations", type=int, default=20_000)
    parser.add_argument("--candidates", type=int, default=40)
    parser.add_argument("--tokenizer", default="pkg://curation_platform/resources/gpt2_tokenizer.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        drop = Path(tmp) / "chat"
        drop.mkdir()
        (drop / "manifest.yaml").write_text(yaml.safe_dump({
            "source": "bench", "kind": "chat", "license": "CC0-1.0", "provenance": {"description": "bench"},
            "id_field": "id"}))
        (drop / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _records(args.conversations)))
        result = _timed("ingest (4 chat shapes -> messages)", args.conversations,
                        lambda: read_drop(drop, IngestConfig()))
    assert result.quarantine.is_empty()
    messages = result.records["messages"]
    built_in = _timed("render chatml (Polars expressions)", len(messages), lambda: render_messages(messages, "chatml"))
    jinja = _timed("render chatml (Jinja2, one per document)", len(messages),
                   lambda: render_messages(messages, CHATML_JINJA))
    assert built_in.to_list() == jinja.to_list()
    tokens = _timed("count tokens of the rendered text", len(messages), lambda: count_tokens(built_in, args.tokenizer))
    print(f"tokens: {int(tokens.sum()):,} ({tokens.mean():.0f} per conversation)")

    code = "def f(values):\n    return sorted(values)[::-1]\n"
    wrong = "def f(values):\n    return sorted(values)\n"
    tests = "assert f([2, 3, 1]) == [3, 2, 1]\nassert f([]) == []\n"
    pairs = [(wrong if k % 4 == 0 else code, tests) for k in range(args.candidates)]
    sequential = SandboxConfig(workers=1)
    outcomes = _timed("sandbox, 1 worker", len(pairs), lambda: run_candidates(pairs, sequential))
    _timed("sandbox, default pool (CPU cores)", len(pairs), lambda: run_candidates(pairs, SandboxConfig()))
    print("outcomes:", pl.Series([o.outcome for o in outcomes]).value_counts(sort=True).rows())


if __name__ == "__main__":
    main()
