"""The grammatical fact signal lands on the expected tokens (rule tagger; spaCy when installed)."""
import pytest

from lacy_mlx.train.bpe import train_bpe
from lacy_mlx.train.labels import SpacyTagger, RuleTagger, align_spans, make_tagger

SENTENCES = [
    "Anna Berg was born on 4 August 1997. She studied at University of Lyon.",
    "He won the Kessler Prize for Science. His field was physics.",
    "She joined Northwind Labs in 2004 and married Otto Lang.",
]


@pytest.fixture(scope="module")
def tok():
    return train_bpe(SENTENCES * 20, 300)


def _words(text, spans):
    return [text[s:e] for s, e in spans]


def test_rule_tagger_phrases():
    tag = RuleTagger().tag
    assert _words(SENTENCES[0], tag(SENTENCES[0])) == ["Anna Berg", "4 August 1997", "University of Lyon"]
    assert _words(SENTENCES[1], tag(SENTENCES[1])) == ["Kessler Prize for Science"]
    assert _words(SENTENCES[2], tag(SENTENCES[2])) == ["Northwind Labs", "2004", "Otto Lang"]


def test_sentence_initial_pronouns_are_not_facts():
    assert RuleTagger().tag("She left. He stayed. They wrote.") == []


def _fact_tokens(tok, text, spans):
    enc = tok.encode(text, add_special_tokens=False)
    labels = align_spans(enc.offsets, spans)
    return [text[s:e].strip() for (s, e), lab in zip(enc.offsets, labels) if lab], labels, enc


def test_alignment_to_bpe_tokens(tok):
    text = SENTENCES[0]
    pieces, labels, enc = _fact_tokens(tok, text, RuleTagger().tag(text))
    assert "".join(pieces).replace(" ", "") == "AnnaBerg4August1997UniversityofLyon"
    # Each phrase gets its own span number; a token is labelled exactly when its letters are in a phrase.
    assert sorted(set(labels.tolist()) - {0}) == [1, 2, 3]
    spans = RuleTagger().tag(text)
    for (s, e), lab in zip(enc.offsets, labels):
        if not text[s:e].strip():
            continue  # a lone space between two words of a phrase belongs to it
        inside = any(a <= i < b for i in range(s, e) if not text[i].isspace() for a, b in spans)
        assert bool(lab) == inside, text[s:e]


def test_spacy_tagger_when_installed(tok):
    spacy = pytest.importorskip("spacy", reason="spaCy is not installed (optional extra: lacy-mlx[spacy])")
    try:
        spacy.load("en_core_web_sm")
    except OSError:
        pytest.skip("spaCy's English pipeline en_core_web_sm is not installed")
    tagger = make_tagger("spacy")
    text = SENTENCES[0]
    words = " ".join(_words(text, tagger.tag(text)))
    for expected in ("Anna", "Berg", "1997", "August", "Lyon"):
        assert expected in words
    assert "born" not in words


def test_spacy_tagger_path_with_a_rule_pipeline(tok):
    """The spaCy code path on a blank English pipeline with an entity ruler (no model download needed)."""
    spacy = pytest.importorskip("spacy", reason="spaCy is not installed (optional extra: lacy-mlx[spacy])")
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "PERSON", "pattern": "Anna Berg"}, {"label": "ORG", "pattern": "University of Lyon"},
                        {"label": "DATE", "pattern": [{"LOWER": "august"}]}])
    tagger = SpacyTagger(nlp)
    text = SENTENCES[0]
    spans = tagger.tag(text)
    words = " ".join(_words(text, spans))
    for expected in ("Anna", "Berg", "1997", "August", "Lyon"):
        assert expected in words
    assert "born" not in words
    pieces, labels, _ = _fact_tokens(tok, text, spans)
    assert sorted(set(labels.tolist()) - {0}) == [1, 2, 3]  # three factual phrases, aligned to BPE tokens


def test_auto_tagger_falls_back_to_rules():
    tagger = make_tagger("auto")
    assert tagger.name in ("rules",) or tagger.name.startswith("spacy")
