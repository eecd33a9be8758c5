"""The chunker: spans point into the text, budgets hold, paragraphs and sentences are respected."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lacy_mlx.chunker import ChunkerConfig, chunk_text, count_tokens

WORDS = st.sampled_from(["alpha", "beta", "Gamma", "1867", "Paris.", "end!", "why?", "x", "(note)", "—"])
TEXT = st.lists(st.tuples(WORDS, st.sampled_from([" ", " ", " ", "\n", "\n\n", ". "])), max_size=300).map(
    lambda pairs: "".join(w + s for w, s in pairs))


@settings(max_examples=150, deadline=None)
@given(TEXT, st.integers(4, 60), st.integers(0, 10))
def test_spans_budget_and_coverage(text, max_tokens, overlap):
    cfg = ChunkerConfig(max_tokens=max_tokens, overlap=min(overlap, max_tokens - 1))
    chunks = chunk_text(text, cfg)
    assert chunks == chunk_text(text, cfg)  # deterministic
    covered = set()
    for i, c in enumerate(chunks):
        assert c.ordinal == i and c.text == text[c.start : c.end] and c.text.strip()
        assert count_tokens(c.text) <= max_tokens or len(c.text.split()) == 1
        covered.update(range(c.start, c.end))
    assert all(chunks[i].start < chunks[i + 1].start for i in range(len(chunks) - 1))
    # Every non-space character belongs to some chunk.
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())


def test_sentences_and_overlap():
    text = "One two three. Four five six. Seven eight nine. Ten eleven twelve."
    chunks = chunk_text(text, ChunkerConfig(max_tokens=8, overlap=4))
    assert [c.text for c in chunks] == [
        "One two three. Four five six.",
        "Four five six. Seven eight nine.",
        "Seven eight nine. Ten eleven twelve.",
    ]


def test_paragraph_starts_new_chunk_when_half_full():
    text = "First paragraph has words here.\n\nSecond paragraph begins. It goes on."
    chunks = chunk_text(text, ChunkerConfig(max_tokens=10, overlap=0))
    assert chunks[0].text == "First paragraph has words here."
    assert chunks[1].text.startswith("Second paragraph")


def test_long_sentence_split_at_words_and_empty_text():
    chunks = chunk_text("word " * 45, ChunkerConfig(max_tokens=20, overlap=0))
    assert [count_tokens(c.text) for c in chunks] == [20, 20, 5]
    assert chunk_text("  \n\t ") == []
