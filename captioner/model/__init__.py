"""Layer 2, the model: encoder (CNN grid), attention, the LSTM decoder, searches, the `Captioner` with save and load.

Imports the data and utils layers; never training, evaluation or the command line.
"""
