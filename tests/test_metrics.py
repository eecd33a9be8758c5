"""The evaluation metrics on hand-made biographies and calls (lacy_mlx.train.metrics)."""
from lacy_mlx.train.corpus import Person
from lacy_mlx.train.metrics import (
    Biography,
    call_precision,
    call_rate,
    call_recall,
    check_claims,
    claims_per_bio,
    factual_precision,
    judge_call,
    leakage,
    relation_at,
    summarize,
    tokens_per_s,
)

ADA = Person("p1-00001", "Ada Moreau", "f", 1, {
    "birth_date": "3 May 1950", "birthplace": "Lyon", "school": "University of Odense", "field": "botany",
    "employer": "Lumen Systems", "award": "Ibsen Award for Teaching", "spouse": "Emil Caruso"})


def test_claims_are_checked_exactly_against_the_gold_values():
    claims = check_claims(ADA, " was born in Lyon. She worked in botany and zoology. She was born in Paris.")
    assert [(c.relation, c.value, c.true) for c in claims] == [
        ("birthplace", "Lyon", True), ("field", "botany and zoology", False), ("birthplace", "Paris", False)]
    assert check_claims(ADA, "was born in Lyon.")[0].true  # with or without the leading space
    assert relation_at("Ada Moreau was born in") == "birthplace" and relation_at("Ada Moreau") is None


def test_a_call_at_a_wrong_fact_counts_for_precision_one_at_a_known_fact_against_it():
    wrong = judge_call(ADA, " was born in", " Paris. She")  # alone, the model would state a false value
    known = judge_call(ADA, " was born in Lyon. She was married to", " Emil Caruso.")  # it knew this one
    nowhere = judge_call(ADA, "", " was born")  # not at a value: no relation, nothing leaked
    assert (wrong.relation, wrong.needed, wrong.leaked) == ("birthplace", True, False)
    assert (known.relation, known.needed, known.leaked) == ("spouse", False, True)
    assert (nowhere.relation, nowhere.needed, nowhere.leaked) == (None, False, False)
    bio = Biography(ADA.pid, "", [], [wrong, known, nowhere], tokens=30, seconds=2.0)
    assert call_precision([bio]) == 1 / 3 and leakage([bio]) == 1 / 3
    assert call_rate([bio]) == 0.1 and tokens_per_s([bio]) == 15.0


def test_call_recall_is_the_share_of_false_alone_values_the_cascade_called_at():
    alone_text = " was born in Paris. She was married to Emil Caruso. She worked in zoology."
    alone = Biography(ADA.pid, alone_text, check_claims(ADA, alone_text), tokens=20, seconds=1.0)
    called = judge_call(ADA, " was born in", " Paris.")
    cascade = Biography(ADA.pid, "", check_claims(ADA, " was born in Lyon."), [called], tokens=10, seconds=1.0)
    assert call_recall([alone], [cascade]) == 0.5  # birthplace called; field (also false alone) not
    assert factual_precision([alone]) == 1 / 3 and claims_per_bio([alone, cascade]) == 2.0
    m = summarize([cascade], alone=[alone])
    assert (m["calls"], m["call_recall"], m["factual_precision"]) == (1, 0.5, 1.0)
    empty = summarize([Biography(ADA.pid, "", [])])  # no claims, no calls, no time: undefined, not zero
    assert empty["factual_precision"] is None and empty["call_precision"] is None and empty["tokens_per_s"] is None


def test_call_sites_say_where_the_calls_sit():
    from lacy_mlx.train.metrics import call_sites

    at_value = judge_call(ADA, " was born in Lyon. She was married to", " Nora Lambert.")  # 2nd sentence
    first = judge_call(ADA, " was born in Lyon.", " She")  # the first word of a sentence
    assert (at_value.sentence, at_value.word, first.sentence, first.word) == (1, 4, 1, 0)
    sites = call_sites([Biography(ADA.pid, "", [], [at_value, first], tokens=20)])
    assert sites == {"calls": 2, "at_value": 0.5, "first_word": 0.5, "mean_sentence": 1.0, "needed_at_value": 1.0}
    assert call_sites([])["at_value"] is None


def test_tagger_coverage_and_agreement_on_a_hand_made_biography():
    from lacy_mlx.train.corpus import Biography as Rendered, ValueSpan
    from lacy_mlx.train.tagger_agreement import coverage, word_agreement

    text = "Ada Moreau was born in Lyon. She worked in botany."
    bio = Rendered(ADA.pid, text, [ValueSpan(22, 26, "birthplace"), ValueSpan(43, 49, "field")])
    rules = [(0, 10), (22, 26)]  # the name and Lyon; not the lower-case field
    wide = [(0, 10), (19, 26)]   # "in Lyon": covers the value but does not start at it
    assert coverage([bio], [rules]) == {"value_recall": 0.5, "value_start": 0.5, "off_value": 0.5, "spans": 2,
                                        "values": 2}
    assert coverage([bio], [wide])["value_start"] == 0.0
    same = word_agreement([text], [rules], [rules])
    assert same["agreement"] == 1.0 and same["kappa"] == 1.0
    assert word_agreement([text], [rules], [wide])["agreement"] == 9 / 10  # "in" differs
