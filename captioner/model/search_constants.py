"""What every search shares, whichever engine runs it (`captioner.model.search`, `captioner.numpy_model.search`)."""

NEGATIVE_INFINITY = -1e9  # large but finite, so that 0 * it stays 0
# Never generated: padding, `<start>`, and `<unk>`, which is not a word anyone wants to read
# (a caption says "a building" with the word it has rather than "a <unk>").
PAD_ID, START_ID, UNKNOWN_ID = 0, 1, 3
