"""How help enters the SLM's context, and how prompts become token ids.

- ``inline`` (models trained with lacy-mlx): after <CALL>, the evidence is appended to the KV
  cache between <EVIDENCE> and </EVIDENCE> and decoding continues; nothing is prefilled again.
- ``prefix`` (off-the-shelf models, FLARE style): the passages go into the prompt, the cache is
  rebuilt, and the current sentence is generated again with them in view.
- ``auto``: ``inline`` when the model has the three tokens, else ``prefix``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

from lacy_mlx.errors import InputError
from lacy_mlx.runtime.kinds import Injection, ResolvedInjection
from lacy_mlx.tokens import SpecialIds

INJECTIONS: tuple[str, ...] = get_args(Injection)  # ("auto", "inline", "prefix")


def resolve_injection(mode: Injection, ids: SpecialIds) -> ResolvedInjection:
    """``inline`` or ``prefix`` for ``mode``; raises InputError when inline is impossible."""
    if mode not in INJECTIONS:
        raise InputError(f"injection must be one of {INJECTIONS}, got {mode!r}")
    if mode == "auto":
        return "inline" if ids.inline_capable else "prefix"
    if mode == "inline" and not ids.inline_capable:
        raise InputError(
            "inline injection needs <CALL>, <EVIDENCE> and </EVIDENCE> in the model's vocabulary: "
            "add them with lacy-mlx's token surgery and fine-tune, or use injection='prefix'"
        )
    return mode  # type: ignore[return-value]  # "auto" was decided above


# No tokenizer spells more characters per token than this in practice; text past
# ``max_tokens * CHARS_PER_TOKEN_BOUND`` characters cannot survive the cut, so it is never tokenized.
CHARS_PER_TOKEN_BOUND = 32


def bounded_ids(tokenizer: Any, text: str, max_tokens: int) -> tuple[list[int], str]:
    """The first ``max_tokens`` token ids of ``text`` and the text they spell.

    Only a prefix of ``text`` is tokenized (see :data:`CHARS_PER_TOKEN_BOUND`), so a delegate's
    18 MB answer costs what its first ``max_tokens`` tokens cost. The text is ``text`` itself
    when nothing was cut.
    """
    if max_tokens <= 0:
        return [], ""
    head = text[: max_tokens * CHARS_PER_TOKEN_BOUND]
    ids = list(tokenizer.encode(head, add_special_tokens=False))
    if len(ids) <= max_tokens and len(head) == len(text):
        return ids, text
    ids = ids[:max_tokens]
    return ids, tokenizer.decode(ids)


def inline_evidence_ids(tokenizer: Any, text: str, ids: SpecialIds, max_tokens: int) -> tuple[list[int], str]:
    """``<EVIDENCE> text </EVIDENCE>`` as ids, the text cut to ``max_tokens`` tokens, and the text kept."""
    body, kept = bounded_ids(tokenizer, text, max_tokens)
    return ids.evidence_block(body), kept


def bounded_passages(tokenizer: Any, passages: Sequence[str], max_tokens: int) -> tuple[str, ...]:
    """``passages`` cut to ``max_tokens`` tokens in all, in order (prefix injection's evidence budget)."""
    out: list[str] = []
    left = max_tokens
    for passage in passages:
        ids, text = bounded_ids(tokenizer, passage, left)
        if not ids:
            break
        out.append(text)
        left -= len(ids)
    return tuple(out)


PASSAGE_INSTRUCTION = "Answer the question using the passages below."
Placement = Literal["system", "user"]


def format_passages(passages: Sequence[str]) -> str:
    """The block prefix injection puts before the prompt."""
    lines = [f"[{i}] {p.strip()}" for i, p in enumerate(passages, 1)]
    return "Relevant passages:\n" + "\n".join(lines) + "\n\n"


def titled_passages(passages: Sequence[str], hits: Sequence[Any]) -> tuple[str, ...]:
    """Prefix injection's passages: each retrieved chunk after its document's title, since a chunk
    often says "she" where the name is only in the title (docs/qa.md: the answer's chunk named its
    subject for 78% of questions, 90% with the title)."""
    if len(hits) != len(passages):
        return tuple(passages)
    out = []
    for passage, hit in zip(passages, hits):
        title = (getattr(hit, "title", None) or "").strip()
        out.append(f"{title}: {passage}" if title and not passage.lstrip().startswith(title) else passage)
    return tuple(out)


def _with_passages(messages: list[dict[str, Any]], at: int, passages: Sequence[str], placement: Placement) -> None:
    """Put the passages into chat ``messages``: under a one-line instruction in the system turn
    (measured best for small chat models, see docs/models.md), or before the user's text."""
    if placement == "user":
        messages[at]["content"] = format_passages(passages) + str(messages[at]["content"])
        return
    block = PASSAGE_INSTRUCTION + "\n\n" + format_passages(passages).rstrip()
    if messages[0]["role"] == "system":
        messages[0]["content"] = f"{str(messages[0]['content']).rstrip()}\n\n{block}"
    else:
        messages.insert(0, {"role": "system", "content": block})


@dataclass(frozen=True)
class Prompt:
    """A prompt ready for the SLM: ``ids``, the ``text`` they spell, and the user's ``question``."""

    ids: tuple[int, ...]
    text: str
    question: str


Messages = Sequence[dict[str, Any]]


def plain_chat(messages: Messages) -> str:
    """Chat messages as plain text, for tokenizers without a chat template.

    One line per message, ``Role: content`` (the role capitalised: ``System``, ``User``,
    ``Assistant``), then ``Assistant:`` for the model to continue. The same format on every call,
    so a conversation's history reads the same with or without a template.
    """
    lines = [f"{str(m['role']).strip().capitalize()}: {str(m['content']).strip()}" for m in messages]
    return "\n".join(lines + ["Assistant:"])


def encode_prompt(tokenizer: Any, prompt: str | Messages, passages: Sequence[str] = (),
                  placement: Placement = "system") -> Prompt:
    """Token ids of ``prompt``: a string is encoded as mlx-lm's ``stream_generate`` does (BOS added
    unless present); chat messages go through the tokenizer's chat template with a generation
    prompt, or :func:`plain_chat` when it has none. ``passages`` (prefix injection) go before the
    text; for chat messages, where ``placement`` says (the system turn, or the last user message)."""
    if isinstance(prompt, str):
        text = format_passages(passages) + prompt if passages else prompt
        bos = getattr(tokenizer, "bos_token", None)
        ids = tokenizer.encode(text, add_special_tokens=bos is None or not text.startswith(bos))
        return Prompt(tuple(ids), text, prompt)
    if not isinstance(prompt, Sequence) or not all(isinstance(m, dict) for m in prompt):
        raise InputError(f"the prompt must be a string or a list of chat messages (dicts), got {type(prompt).__name__}")
    messages = [dict(m) for m in prompt]
    if not messages or any("role" not in m or "content" not in m for m in messages):
        raise InputError("chat messages are dicts with 'role' and 'content', e.g. [{'role': 'user', 'content': 'Hi'}]")
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    question = str(messages[users[-1]]["content"]) if users else str(messages[-1]["content"])
    if passages:
        _with_passages(messages, users[-1] if users else len(messages) - 1, passages, placement)
    if getattr(tokenizer, "chat_template", None) is None and not getattr(tokenizer, "has_chat_template", False):
        return replace(encode_prompt(tokenizer, plain_chat(messages)), question=question)
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return Prompt(tuple(ids), str(text), question)
