"""Entities annotations matched to things other than their own captions.

`scene_annotations`: a synthetic scene's shapes as annotations, so the demo's grounding is measured by the
same code as photos. `boxes_of_words`: the human boxes behind the words of a caption the model wrote, so an
overlay or the HTML viewer can draw them beside each word's map.
"""

from __future__ import annotations

import numpy as np

from captioner.data.entities import Annotation, Phrase, Sentence, normalised_boxes

def scene_annotations(scenes) -> list[Annotation]:
    """Synthetic scenes (`captioner.data.synthetic`) as Annotations, so their grounding is measured by the same code
    as photos: each shape is a chain with its bounding box, each caption phrase naming it ("large red circle") a
    Phrase typed by the shape, its head the shape word."""
    annotations = []
    for index, scene in enumerate(scenes):
        height, width = scene.image.shape[:2]
        boxes = {}
        for chain, shape in enumerate(scene.objects, start=1):
            (x, y), radius = shape.centre, shape.radius
            # pixels i (1-based) span [i - 1, i): the box holds every pixel the shape's disc touches
            boxes[chain] = ((max(1, int(np.floor(x - radius)) + 1), max(1, int(np.floor(y - radius)) + 1),
                             min(width, int(np.ceil(x + radius))), min(height, int(np.ceil(y + radius)))),)
        sentences = []
        for caption, word_objects in zip(scene.captions, scene.word_objects):
            words = tuple(caption.split())
            phrases, position = [], 0
            while position < len(words):
                shape = word_objects[position]
                end = position
                while end + 1 < len(words) and word_objects[end + 1] == shape:
                    end += 1
                if shape >= 0:
                    phrases.append(Phrase(shape + 1, (scene.objects[shape].shape,), position, end))
                position = end + 1
            sentences.append(Sentence(caption, words, tuple(phrases)))
        annotations.append(Annotation(str(index), width, height, boxes, frozenset(), frozenset(), tuple(sentences)))
    return annotations


def boxes_of_words(annotation: Annotation, words) -> list[np.ndarray]:
    """For each word, the boxes of the annotated phrases whose head (last word) it is, in any of the image's
    reference sentences: (K, 4) x0, y0, x1, y1 as fractions of the photo's width and height (K = 0: none).

    A generated "dog" is matched to "a brown dog" and "the dog"; words that head no boxed phrase ("a",
    "runs") get none. Each chain's boxes count once.
    """
    chains: dict[str, set[int]] = {}
    for sentence in annotation.sentences:
        for phrase in sentence.phrases:
            if annotation.boxes_of(phrase):
                chains.setdefault(sentence.words[phrase.last], set()).add(phrase.chain)
    found = []
    for word in words:
        boxes = [box for chain in sorted(chains.get(word, ())) for box in annotation.boxes[chain]]
        found.append(normalised_boxes(boxes, annotation.width, annotation.height) if boxes else np.zeros((0, 4)))
    return found
