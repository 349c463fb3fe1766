"""Helpers every layer may use: atomic file writes, graph compilation, progress bars, a quiet TensorFlow import
with a pooling CPU allocator."""
