"""Training and the runtime share one contract (lacy_mlx.tokens): what training writes after a
<CALL> is, token for token, what the runtime's inline injection puts into the KV cache there."""
from __future__ import annotations

from tokenizers import Tokenizer

import lacy_mlx
from lacy_mlx.runtime import GateConfig
from lacy_mlx.tokens import CALL_TOKEN, EVIDENCE_END, format_evidence, read_lacy_section, special_ids
from lacy_mlx.train.copying import Insert
from lacy_mlx.train.corpus import Biography, ValueSpan
from lacy_mlx.train.data import Document, encode_documents
from lacy_mlx.train.labels import RuleTagger

PASSAGES = [" Marie Curie was born in Warsaw. ", "Alan Turing was born in London."]  # stray spaces: stripped both sides


def _block(ids: list[int], call: int, end: int) -> list[int]:
    """The first ``<CALL> ... </EVIDENCE>`` run of ``ids``."""
    start = ids.index(call)
    return ids[start : ids.index(end, start) + 1]


def test_training_block_is_what_the_runtime_injects(tiny_dir):
    tok = Tokenizer.from_file(str(tiny_dir / "tokenizer.json"))
    vocab_ids = special_ids(tok)
    assert vocab_ids == special_ids(tok, read_lacy_section(tiny_dir))  # config.json records the vocabulary's ids
    # Training: a biography with a call before its value, the passages in the evidence format.
    text = "Marie Curie was born in Warsaw."
    at = text.index(" Warsaw")
    bio = Biography("p0", text, [ValueSpan(at + 1, len(text) - 1, "birthplace")])
    doc = Document(bio, [Insert(at, "birthplace", format_evidence(PASSAGES))])
    stream = encode_documents([doc], tok, RuleTagger(), {})
    trained = _block([int(i) for i in stream.ids], vocab_ids.call, vocab_ids.evidence_end)

    # The runtime: the same passages from a delegate, a call forced at the first step.
    lacy = lacy_mlx.load(str(tiny_dir), delegate=lambda ctx: list(PASSAGES),
                         gate=GateConfig(mode="call", call_threshold=0.0, max_calls=1))
    assert lacy.injection == "inline"
    done = list(lacy.stream("Marie Curie was born in", max_tokens=4))[-1]
    injected = _block(list(done.context), lacy.specials.call, lacy.specials.evidence_end)

    assert injected == trained
    assert trained[0] == tok.token_to_id(CALL_TOKEN) and trained[-1] == tok.token_to_id(EVIDENCE_END)
    assert tok.decode(trained[2:-1]) == "Marie Curie was born in Warsaw.\nAlan Turing was born in London."
