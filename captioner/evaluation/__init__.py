"""Layer 3, scores: COCO caption metrics, CIDEr-D, grounding on synthetic scenes, the paired bootstrap, `captioner evaluate`.

Imports data, model and utils; never training or the command line.
"""
