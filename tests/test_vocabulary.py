import pytest

from captioner.data.vocabulary import SPECIAL_TOKENS, Vocabulary, tokenize


def test_tokenize_lowercases_and_strips_punctuation():
    assert tokenize("A Dog, running!  Fast... it's 2 dogs") == ["a", "dog", "running", "fast", "it's", "2", "dogs"]


def test_special_tokens_come_first():
    vocabulary = Vocabulary.build(["a dog", "a cat"])
    assert tuple(vocabulary.words[:4]) == SPECIAL_TOKENS
    assert vocabulary.words[4] == "a"  # the most frequent word gets the first free id


def test_round_trip_and_unknown_words():
    vocabulary = Vocabulary.build(["a red circle", "a blue square"])
    ids = vocabulary.encode("A red square!")
    assert ids[0] == vocabulary.start_id and ids[-1] == vocabulary.end_id
    assert vocabulary.decode(ids) == ["a", "red", "square"]
    assert vocabulary.decode(vocabulary.encode("a purple square")) == ["a", "<unk>", "square"]


def test_min_count_drops_rare_words():
    vocabulary = Vocabulary.build(["a dog", "a dog", "a cat"], min_count=2)
    assert "dog" in vocabulary.ids and "cat" not in vocabulary.ids


def test_encode_batch_pads_and_cuts():
    vocabulary = Vocabulary.build(["one two three four"])
    batch = vocabulary.encode_batch(["one two three four", "one"], max_length=2)
    assert batch.shape == (2, 4)
    assert vocabulary.decode(batch[0]) == ["one", "two"]
    assert list(batch[1]) == [vocabulary.start_id, vocabulary.ids["one"], vocabulary.end_id, vocabulary.pad_id]


def test_decode_stops_at_end():
    vocabulary = Vocabulary.build(["a b"])
    assert vocabulary.decode([vocabulary.ids["a"], vocabulary.end_id, vocabulary.ids["b"]]) == ["a"]


def test_save_and_load(tmp_path):
    vocabulary = Vocabulary.build(["the quick brown fox", "the lazy dog"])
    vocabulary.save(tmp_path / "vocabulary.json")
    assert Vocabulary.load(tmp_path / "vocabulary.json").words == vocabulary.words


def test_rejects_vocabulary_without_special_tokens():
    with pytest.raises(ValueError):
        Vocabulary(["a", "b", "c", "d"])
