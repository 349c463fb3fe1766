"""Layer 1, the data: caption datasets (readers), images, vocabulary, synthetic scenes, the feature cache and the tf.data pipeline.

Imports only `captioner.utils`; never the model, training or evaluation.
"""
