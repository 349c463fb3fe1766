"""Property-based tests: any text into the tokenizer and the readers, no crash out."""

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from captioner.data.readers import ReaderError, read_dataset
from captioner.data.vocabulary import Vocabulary, tokenize

WORDS = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=8)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@given(st.text())
@FAST
def test_tokenize_any_text(text):
    tokens = tokenize(text)
    assert all(token and token == token.lower() and " " not in token for token in tokens)
    assert tokenize(" ".join(tokens)) == tokens  # tokenising is idempotent


@given(st.lists(WORDS, min_size=1, max_size=12), st.lists(st.lists(WORDS, max_size=10), max_size=20))
@FAST
def test_vocabulary_round_trip(caption, corpus):
    vocabulary = Vocabulary.build([" ".join(caption)] + [" ".join(c) for c in corpus])
    assert vocabulary.decode(vocabulary.encode(" ".join(caption))) == caption


@given(st.binary(max_size=400))
@FAST
def test_flickr8k_reader_on_any_bytes(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("flickr8k")
    (root / "Flicker8k_Dataset").mkdir()
    (root / "Flickr8k.token.txt").write_bytes(data)
    try:
        read_dataset("flickr8k", root)
    except ReaderError as error:
        assert "Flickr8k.token.txt" in str(error) or str(root) in str(error)


@given(st.text(max_size=300))
@FAST
def test_csv_reader_on_any_text(tmp_path_factory, text):
    root = tmp_path_factory.mktemp("csv")
    (root / "captions.csv").write_text("image,caption,split\n" + text, encoding="utf-8")
    try:
        examples = read_dataset("csv", root / "captions.csv")
    except ReaderError as error:
        assert "captions.csv" in str(error)
    else:
        assert all(e.captions and e.split in ("train", "val", "test") for e in examples)
