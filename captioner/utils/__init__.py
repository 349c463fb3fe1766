"""Helpers every layer may use: atomic file writes, graph compilation, progress bars, a quiet TensorFlow import."""
