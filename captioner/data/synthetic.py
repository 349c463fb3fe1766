"""Synthetic scenes: coloured shapes on a background, with captions and ground truth.

Each scene holds one to three shapes. Its reference captions name every shape
("a small red circle") and, for two shapes, how they sit ("... above a large
blue square"); three shapes are listed from left to right. Every template names
the shapes in one fixed order (top or left first), so a caption is determined
by the image and its first word. Because we drew the
scene we also know each shape's pixel mask and which caption words name which
shape, so we can measure whether the model looks at the right place when it
says a word (`attention_grounding` in `captioner.evaluation.metrics`).

Everything is deterministic given the seed.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (150, 60, 190),
}
SHAPES = ("circle", "square", "triangle", "diamond")
# Radius as a fraction of the image side: two clearly separated classes.
SIZES = {"small": (0.06, 0.08), "large": (0.12, 0.14)}
OBJECT_COUNT_PROBABILITIES = {1: 0.2, 2: 0.4, 3: 0.4}
# Two shapes are "above"/"left of" each other only when one axis clearly dominates.
RELATION_DOMINANCE = 2.0
MIN_GAP = 0.04  # free space between shapes, as a fraction of the image side
MIN_COLUMN_GAP = 0.12  # three shapes must be clearly ordered left to right

OBJECT_WORDS = frozenset(COLOURS) | frozenset(SHAPES)


@dataclasses.dataclass
class SceneObject:
    shape: str
    colour: str
    size: str
    centre: tuple[float, float]  # (x, y) in pixels
    radius: float  # in pixels
    mask: np.ndarray  # (height, width) bool

    @property
    def phrase(self) -> list[str]:
        return [self.size, self.colour, self.shape]


@dataclasses.dataclass
class Scene:
    image: np.ndarray  # (height, width, 3) uint8
    objects: list[SceneObject]
    captions: list[str]
    # For each caption, for each of its words: index of the object it names, or -1.
    word_objects: list[list[int]]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, centre, radius, fill) -> None:
    x, y = centre
    if shape == "circle":
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=fill)
    elif shape == "square":
        half = radius * 0.9  # a square of the same "radius" looks bigger than a circle
        draw.rectangle([x - half, y - half, x + half, y + half], fill=fill)
    elif shape == "triangle":
        points = [
            (x + radius * math.cos(math.radians(angle)), y - radius * math.sin(math.radians(angle)))
            for angle in (90, 210, 330)
        ]
        draw.polygon(points, fill=fill)
    elif shape == "diamond":
        draw.polygon([(x, y - radius), (x + radius, y), (x, y + radius), (x - radius, y)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")


def _background(rng: np.random.Generator, size: int, textured: bool) -> np.ndarray:
    base = rng.uniform(90, 160)
    grey = np.full((size, size), base, dtype=np.float32)  # the same in every channel: computed once, then copied
    if textured:
        # Low-frequency noise: blocks of random grey, smoothed by upsampling.
        coarse = rng.normal(0, 18, size=(8, 8)).astype(np.float32)
        smooth = np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.BILINEAR))
        grey += smooth + rng.normal(0, 6, size=(size, size, 1))[..., 0]
    return np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


def _place_objects(rng: np.random.Generator, radii: list[float], size: int) -> list[tuple[float, float]] | None:
    """Random centres with no overlaps and an unambiguous layout, or None to retry."""
    centres = []
    for radius in radii:
        low, high = radius + 2, size - radius - 2
        centres.append((rng.uniform(low, high), rng.uniform(low, high)))
    for i in range(len(centres)):
        for j in range(i + 1, len(centres)):
            distance = math.dist(centres[i], centres[j])
            if distance < radii[i] + radii[j] + MIN_GAP * size:
                return None
    if len(centres) == 2:
        dx = abs(centres[0][0] - centres[1][0])
        dy = abs(centres[0][1] - centres[1][1])
        if max(dx, dy) < RELATION_DOMINANCE * min(dx, dy):
            return None
    if len(centres) == 3:
        xs = sorted(c[0] for c in centres)
        if min(xs[1] - xs[0], xs[2] - xs[1]) < MIN_COLUMN_GAP * size:
            return None
    return centres


def _captions(objects: list[SceneObject]) -> tuple[list[str], list[list[int]]]:
    """All reference captions of a scene, each with the object index of every word."""
    templates: list[list[tuple[str, int]]] = []  # words paired with the object they name

    def phrase(index: int) -> list[tuple[str, int]]:
        return [("a", -1)] + [(word, index) for word in objects[index].phrase]

    def words(text: str) -> list[tuple[str, int]]:
        return [(word, -1) for word in text.split()]

    if len(objects) == 1:
        templates.append(phrase(0))
        templates.append(words("there is") + phrase(0))
    elif len(objects) == 2:
        (x0, y0), (x1, y1) = objects[0].centre, objects[1].centre
        # The first word of a template fixes which shape is named first (the top or left one):
        # were "A above B" and "B below A" both allowed, nothing in "a ..." would say which shape
        # comes next, and a model trained on both blends them ("a red" from one, "square" from the other).
        if abs(y0 - y1) > abs(x0 - x1):
            first, second = (0, 1) if y0 < y1 else (1, 0)  # top, bottom
            templates.append(phrase(first) + words("above") + phrase(second))
            templates.append(words("below") + phrase(first) + words("there is") + phrase(second))
        else:
            first, second = (0, 1) if x0 < x1 else (1, 0)  # left, right
            templates.append(phrase(first) + words("to the left of") + phrase(second))
            templates.append(words("to the right of") + phrase(first) + words("there is") + phrase(second))
    else:
        left_to_right = sorted(range(3), key=lambda i: objects[i].centre[0])
        listing = phrase(left_to_right[0]) + phrase(left_to_right[1]) + words("and") + phrase(left_to_right[2])
        templates.append(listing)
        templates.append(words("from left to right") + listing)
    captions = [" ".join(word for word, _ in template) for template in templates]
    word_objects = [[index for _, index in template] for template in templates]
    return captions, word_objects


def make_scene(rng: np.random.Generator, image_size: int = 224, textured: bool = True) -> Scene:
    """Draw one random scene and write its captions."""
    counts = list(OBJECT_COUNT_PROBABILITIES)
    count = int(rng.choice(counts, p=list(OBJECT_COUNT_PROBABILITIES.values())))
    # Distinct (colour, shape) pairs, so that every phrase names exactly one object.
    pairs = [(colour, shape) for colour in COLOURS for shape in SHAPES]
    chosen = [pairs[i] for i in rng.choice(len(pairs), size=count, replace=False)]
    sizes = [str(rng.choice(list(SIZES))) for _ in range(count)]
    radii = [rng.uniform(*SIZES[s]) * image_size for s in sizes]
    centres = None
    while centres is None:
        centres = _place_objects(rng, radii, image_size)

    image = Image.fromarray(_background(rng, image_size, textured))
    draw = ImageDraw.Draw(image)
    objects = []
    for (colour, shape), size, radius, centre in zip(chosen, sizes, radii, centres):
        jitter = rng.integers(-15, 16, size=3)
        fill = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(COLOURS[colour], jitter))
        _draw_shape(draw, shape, centre, radius, fill)
        mask_image = Image.new("L", (image_size, image_size), 0)
        _draw_shape(ImageDraw.Draw(mask_image), shape, centre, radius, 255)
        objects.append(SceneObject(shape, colour, size, centre, radius, np.asarray(mask_image) > 127))
    # Later shapes are drawn over earlier ones; placement forbids overlap, so masks stay exact.
    captions, word_objects = _captions(objects)
    return Scene(np.asarray(image), objects, captions, word_objects)


def make_scenes(count: int, seed: int, image_size: int = 224, textured: bool = True) -> list[Scene]:
    """`count` scenes from one seed; the same seed always gives the same scenes."""
    rng = np.random.default_rng(seed)
    return [make_scene(rng, image_size, textured) for _ in range(count)]


def phrases_in_caption(words: list[str]) -> list[tuple[int, str, str]]:
    """(position of the shape word, colour, shape) for every "colour shape" phrase in a caption."""
    found = []
    for position, word in enumerate(words):
        if word in SHAPES and position > 0 and words[position - 1] in COLOURS:
            found.append((position, words[position - 1], word))
    return found
