"""The one sentence rule (lacy_mlx.sentences) as the runtime, retrieval and the server read it."""
from lacy_mlx.sentences import ends_sentence, last_sentence, sentence_end


def test_sentence_ends_and_the_last_sentence():
    assert ends_sentence(".") and ends_sentence(" Paris.\n") and ends_sentence("?!") and ends_sentence("\n")
    assert not ends_sentence(" Paris") and not ends_sentence("")
    assert last_sentence("Tell me about Curie. Where was she born?  ") == "Where was she born?"
    assert last_sentence("one line\nsecond line") == "second line" and last_sentence("  ") == ""
    assert sentence_end("She was born. Then", 0) == len("She was born.") and sentence_end("no end", 2) == 6
