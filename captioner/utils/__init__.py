"""Helpers every layer may use: atomic file writes, graph compilation, a quiet TensorFlow import."""
