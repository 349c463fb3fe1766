import numpy as np

from captioner.data import pipeline


def _token_ids(count=500, width=22, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.zeros((count, width), np.int32)
    for row, length in enumerate(rng.integers(3, width + 1, size=count)):
        ids[row, :length] = rng.integers(4, 50, size=length)
    return ids


def test_an_epoch_visits_every_pair_once_in_a_seeded_order():
    ids = _token_ids()
    batches = pipeline.epoch_batches(ids, 32, seed=1, epoch=0)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(ids)))
    again = pipeline.epoch_batches(ids, 32, seed=1, epoch=0)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    other = pipeline.epoch_batches(ids, 32, seed=1, epoch=1)
    assert not all(np.array_equal(a, b) for a, b in zip(batches, other))


def test_batches_hold_similar_lengths_and_are_padded_to_their_own_longest():
    ids = _token_ids(count=2000)
    lengths = (ids != 0).sum(axis=1)
    batches = pipeline.epoch_batches(ids, 32, seed=0, epoch=0)
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    random_spread = np.mean([np.ptp(lengths[b]) for b in np.array_split(np.random.default_rng(0).permutation(2000), 63)])
    assert spread < random_spread / 3
    features = np.zeros((2000, 4, 2), np.float16)
    widths = set()
    for (batch_features, batch_ids), batch in zip(pipeline.make_dataset(features, np.arange(2000), ids, batches), batches):
        longest = lengths[batch].max()
        assert batch_ids.shape[1] == min(pipeline.padded_length(longest), ids.shape[1]) >= longest
        assert batch_features.dtype == np.float32
        widths.add(batch_ids.shape[1])
    assert len(widths) <= ids.shape[1] // pipeline.LENGTH_STEP + 1


def test_random_batches_cover_every_pair_without_grouping_lengths():
    ids = _token_ids(count=2000)
    lengths = (ids != 0).sum(axis=1)
    batches = pipeline.epoch_batches(ids, 32, seed=0, epoch=0, by_length=False)
    assert sorted(np.concatenate(batches).tolist()) == list(range(2000))
    grouped = pipeline.epoch_batches(ids, 32, seed=0, epoch=0, by_length=True)
    assert np.mean([np.ptp(lengths[b]) for b in batches]) > 3 * np.mean([np.ptp(lengths[b]) for b in grouped])


def test_random_batches_can_share_one_width_so_that_one_compiled_step_serves_them():
    ids = _token_ids(count=300)
    ids[:, -3:] = 0  # no caption fills the array: the common width is the longest caption's, padded
    width = pipeline.fitting_width(ids)
    assert width == pipeline.padded_length(int((ids != 0).sum(axis=1).max())) <= ids.shape[1]
    batches = pipeline.epoch_batches(ids, 4, seed=0, epoch=0, by_length=False)
    features = np.zeros((300, 4, 2), np.float16)
    own = {batch_ids.shape[1] for _, batch_ids in pipeline.make_dataset(features, np.arange(300), ids, batches)}
    shared = {batch_ids.shape[1] for _, batch_ids in pipeline.make_dataset(features, np.arange(300), ids, batches,
                                                                            width=width)}
    assert len(own) > 1 and shared == {width}
