"""SFT formatting: every chat and instruction shape becomes ``messages``; releases render them with a chat template.

**Into ``messages``** (at ingest, for drops of kind ``chat`` or ``format: chat``): a list of ``{role, content}``
with roles ``system``, ``user`` and ``assistant``. The shapes read, and how:

* OpenAI style: ``messages: [{role, content}]`` (content a string).
* ShareGPT style: ``conversations: [{from, value}]`` (or ``{role, content}`` items); ``from`` ``human`` is
  ``user``, ``gpt``/``chatgpt``/``bard``/``bing``/``model``/``bot`` are ``assistant``, ``system`` stays.
* Prompt and response: ``prompt`` and ``response`` become one user and one assistant turn.
* Alpaca style: ``instruction``, optional ``input``, ``output``: the user turn is the instruction, then (when
  ``input`` is not empty) a blank line and the input; the assistant turn is the output.
* A top-level ``system`` string becomes a first system turn (unless the turns already start with one).

Roles are matched case-insensitively. A conversation is valid when every turn has a known role and non-empty
content, a system turn comes only first, the other turns alternate user, assistant, user, ... and the last turn
is the assistant's. Invalid ones are quarantined at ingest with the rule that failed (``chat.unknown_role``,
``chat.empty_turn``, ``chat.system_not_first``, ``chat.not_alternating``, ``chat.not_ending_with_assistant``).

**Into ``text``** (at release, ``formatting.chat_template``): chat documents get their training text rendered
from ``messages``, and ``token_count`` counts that text with ``release.tokenizer``. The template is one of

* a built-in name, rendered with Polars list expressions (no per-document Python): ``chatml`` (the default;
  ``<|im_start|>role\\ncontent<|im_end|>\\n`` per turn), ``llama3`` (``<|begin_of_text|>`` then
  ``<|start_header_id|>role<|end_header_id|>\\n\\ncontent<|eot_id|>`` per turn) or ``plain`` (``role: content``
  turns separated by a blank line: the text every curation stage saw);
* a Jinja2 template string (anything with ``{{`` or ``{%``), rendered like Hugging Face ``apply_chat_template``
  (sandboxed Jinja, ``trim_blocks``, ``lstrip_blocks``, variables ``messages``, ``add_generation_prompt`` =
  false, ``bos_token``, ``eos_token``, function ``raise_exception``), one document at a time;
* a path (or ``pkg://`` resource) to a Hugging Face ``tokenizer_config.json``: its ``chat_template`` (the string,
  or the entry named ``default`` of a list) with its ``bos_token`` and ``eos_token``. A ``tokenizer.json`` does not
  carry a chat template (Hugging Face keeps it in ``tokenizer_config.json``), so the shipped GPT-2 tokenizer has
  none and the default is ``chatml``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict

from curation_platform.errors import ConfigError
from curation_platform.records import MESSAGES_DTYPE

ROLES = ("system", "user", "assistant")
ROLE_ALIASES = {"human": "user", "gpt": "assistant", "chatgpt": "assistant", "bard": "assistant",
                "bing": "assistant", "model": "assistant", "bot": "assistant"}
BUILT_IN_TEMPLATES = ("chatml", "llama3", "plain")

# Equivalent Jinja2 text of the built-ins (the exact strings their Hugging Face models ship, minus the generation
# prompt), for anyone who wants to render outside this platform.
CHATML_JINJA = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
                "'<|im_end|>' + '\n'}}{% endfor %}")


class FormattingConfig(BaseModel):
    """How releases render chat documents into training text."""

    model_config = ConfigDict(extra="forbid")

    # A built-in (chatml, llama3, plain), a Jinja2 template string, or a path / pkg:// to tokenizer_config.json.
    chat_template: str = "chatml"
    kinds: list[str] = ["chat"]  # documents of these kinds with messages get the rendered text


# ---------------------------------------------------------------------------------------------------------------
# Ingest: every shape into messages, then validation


def _role(role: pl.Expr) -> pl.Expr:
    lowered = role.str.strip_chars().str.to_lowercase()
    return lowered.replace(ROLE_ALIASES)


def _turn(role: str, content: pl.Expr) -> pl.Expr:
    return pl.struct(pl.lit(role).alias("role"), content.alias("content"))


def _non_empty(column: str) -> pl.Expr:
    return pl.col(column).str.strip_chars().str.len_chars().fill_null(0) > 0


def chat_messages(turns: str = "chat_turns", system: str = "system_prompt", prompt: str = "prompt",
                  response: str = "response", instruction: str = "instruction", instruction_input: str = "input",
                  output: str = "output") -> pl.Expr:
    """``messages`` (MESSAGES_DTYPE) from the columns an ingest extracted: ``turns`` (raw ``{role, content}`` items
    from ``messages`` or ``conversations``), else prompt/response, else instruction/input/output; a ``system``
    string is prepended as a first turn. Null when the record has none of these shapes."""
    mapped = pl.col(turns).list.eval(pl.struct(_role(pl.element().struct.field("role")).alias("role"),
                                               pl.element().struct.field("content").alias("content")))
    user_instruction = (pl.when(_non_empty(instruction_input))
                        .then(pl.format("{}\n\n{}", pl.col(instruction), pl.col(instruction_input)))
                        .otherwise(pl.col(instruction)))
    body = (
        pl.when(pl.col(turns).is_not_null()).then(mapped)
        .when(_non_empty(prompt) & _non_empty(response))
        .then(pl.concat_list(_turn("user", pl.col(prompt)), _turn("assistant", pl.col(response))))
        .when(_non_empty(instruction) & _non_empty(output))
        .then(pl.concat_list(_turn("user", user_instruction), _turn("assistant", pl.col(output))))
    )
    starts_with_system = body.list.first().struct.field("role") == "system"
    return (
        pl.when(body.is_not_null() & _non_empty(system) & ~starts_with_system.fill_null(False))
        .then(pl.concat_list(_turn("system", pl.col(system)), body))
        .otherwise(body)
        .cast(MESSAGES_DTYPE)
    )


def chat_problems(messages: pl.Expr) -> list[tuple[pl.Expr, str, pl.Expr]]:
    """(condition, rule, reason) per way a conversation can be invalid, in the order they are reported."""
    role = pl.element().struct.field("role")
    content = pl.element().struct.field("content")
    position = pl.int_range(pl.len())
    dialogue = messages.list.eval(role.filter(role != "system"))
    expected = pl.when(pl.int_range(pl.len()) % 2 == 0).then(pl.lit("user")).otherwise(pl.lit("assistant"))
    checks = [
        (messages.list.eval(~role.is_in(ROLES)).list.any(), "chat.unknown_role",
         pl.format("chat.unknown_role: roles must be system, user or assistant (or ShareGPT's human, gpt); got [{}]",
                   messages.list.eval(role).list.join(", "))),
        (messages.list.eval(content.str.strip_chars().str.len_chars().fill_null(0) == 0).list.any(),
         "chat.empty_turn", pl.lit("chat.empty_turn: a turn has empty content")),
        (messages.list.eval((role == "system") & (position > 0)).list.any(), "chat.system_not_first",
         pl.lit("chat.system_not_first: a system turn may only come first")),
        (~dialogue.list.eval(pl.element() == expected).list.all() | (dialogue.list.len() == 0),
         "chat.not_alternating",
         pl.format("chat.not_alternating: turns must alternate user, assistant, ... starting with user; got [{}]",
                   dialogue.list.join(", "))),
        (messages.list.last().struct.field("role") != "assistant", "chat.not_ending_with_assistant",
         pl.lit("chat.not_ending_with_assistant: the last turn must be the assistant's")),
    ]
    return [(condition.fill_null(False), rule, reason) for condition, rule, reason in checks]


# ---------------------------------------------------------------------------------------------------------------
# Release: messages into training text


def render_plain(messages: pl.Expr) -> pl.Expr:
    """``role: content`` turns separated by a blank line: a chat document's ``text`` through curation."""
    return messages.list.eval(pl.format("{}: {}", pl.element().struct.field("role"),
                                        pl.element().struct.field("content"))).list.join("\n\n")


def _render_built_in(name: str, messages: pl.Expr) -> pl.Expr:
    role, content = pl.element().struct.field("role"), pl.element().struct.field("content")
    if name == "chatml":
        return messages.list.eval(pl.format("<|im_start|>{}\n{}<|im_end|>\n", role, content)).list.join("")
    if name == "llama3":
        return pl.lit("<|begin_of_text|>") + messages.list.eval(
            pl.format("<|start_header_id|>{}<|end_header_id|>\n\n{}<|eot_id|>", role, content)).list.join("")
    return render_plain(messages)


@functools.lru_cache(maxsize=8)
def _template_source(chat_template: str) -> tuple[str, str, str, str]:
    """(kind, template text, bos_token, eos_token): kind ``built-in`` or ``jinja``."""
    if chat_template in BUILT_IN_TEMPLATES:
        return "built-in", chat_template, "", ""
    if "{{" in chat_template or "{%" in chat_template:
        return "jinja", chat_template, "", ""
    from curation_platform.workspace import resolve_resource

    path = Path(resolve_resource(chat_template, "formatting.chat_template"))
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"formatting.chat_template: cannot read {path} as a tokenizer_config.json ({exc}); use "
                          f"one of {', '.join(BUILT_IN_TEMPLATES)}, a Jinja2 template or a tokenizer_config.json")
    template = config.get("chat_template") if isinstance(config, dict) else None
    if isinstance(template, list):
        template = next((t.get("template") for t in template if isinstance(t, dict) and t.get("name") == "default"),
                        None)
    if not isinstance(template, str) or not template.strip():
        raise ConfigError(f"formatting.chat_template: {path} has no chat_template (a tokenizer.json never has one; "
                          "Hugging Face keeps it in tokenizer_config.json); use one of "
                          f"{', '.join(BUILT_IN_TEMPLATES)}")

    def token(name: str) -> str:
        value = config.get(name)
        return value.get("content", "") if isinstance(value, dict) else (value or "")

    return "jinja", template, token("bos_token"), token("eos_token")


def template_name(chat_template: str) -> str:
    """How the card names the template: the built-in's name, the file, or ``jinja`` for an inline template."""
    kind, _, _, _ = _template_source(chat_template)
    return chat_template if kind == "built-in" or "{" not in chat_template else "jinja"


@functools.lru_cache(maxsize=8)
def _compiled(template: str):
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template)
    except TemplateError as exc:
        raise ConfigError(f"formatting.chat_template: not a valid Jinja2 template: {exc}") from None


def render_messages(messages: pl.Series, chat_template: str) -> pl.Series:
    """Training text of each conversation (null where ``messages`` is null), with the configured template."""
    kind, template, bos, eos = _template_source(chat_template)
    if kind == "built-in":
        frame = pl.DataFrame({"m": messages})
        return frame.select(pl.when(pl.col("m").is_not_null()).then(_render_built_in(template, pl.col("m")))
                            .alias("text"))["text"]
    from jinja2.exceptions import TemplateError

    compiled = _compiled(template)
    rendered: list[str | None] = []
    for conversation in messages.to_list():  # Jinja has no column form: one render per document
        if conversation is None:
            rendered.append(None)
            continue
        try:
            rendered.append(compiled.render(messages=conversation, add_generation_prompt=False, bos_token=bos,
                                            eos_token=eos))
        except TemplateError as exc:
            raise ConfigError(f"formatting.chat_template: rendering failed: {exc}") from None
    return pl.Series("text", rendered, dtype=pl.String)


def training_text(docs: pl.DataFrame, cfg: FormattingConfig) -> pl.Series:
    """``text`` with chat documents (``cfg.kinds``, non-empty ``messages``) rendered by the template."""
    if "messages" not in docs.columns or docs.is_empty():
        return docs["text"]
    chat = docs.select(((pl.col("kind").is_in(cfg.kinds)) & (pl.col("messages").list.len() > 0))
                       .fill_null(False).alias("c"))["c"]
    if not chat.any():
        return docs["text"]
    rows = chat.arg_true()
    rendered = render_messages(docs["messages"].gather(rows), cfg.chat_template)
    return docs["text"].scatter(rows, rendered)


def formatting_card(selected: pl.DataFrame, cfg: FormattingConfig, tokenizer: str) -> dict[str, Any]:
    """The card's ``formatting`` section: the template and token counts of the selected documents."""
    chat = selected.filter(pl.col("kind").is_in(cfg.kinds)) if selected.height else selected
    by_kind = (selected.group_by("kind").agg(pl.len().alias("documents"), pl.col("token_count").sum().alias("tokens"))
               .sort("kind") if selected.height else None)
    tokens = selected["token_count"] if selected.height else pl.Series([], dtype=pl.Int64)
    return {
        "chat_template": template_name(cfg.chat_template),
        "rendered_kinds": list(cfg.kinds),
        "tokenizer": tokenizer,
        "documents_rendered": int(chat.height),
        "tokens": int(tokens.sum() or 0),
        "tokens_per_document": {
            "mean": float(tokens.mean() or 0), "median": float(tokens.median() or 0),
            "p95": float(tokens.quantile(0.95) or 0) if len(tokens) else 0.0, "max": int(tokens.max() or 0),
        },
        "by_kind": {row["kind"]: {"documents": int(row["documents"]), "tokens": int(row["tokens"])}
                    for row in by_kind.iter_rows(named=True)} if by_kind is not None else {},
    }
