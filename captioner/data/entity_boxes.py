"""The boxes of Flickr30k Entities: `Annotations/<id>.xml`, read with the line of every element.

PASCAL-VOC-like XML: <size> of the original photo, then <object>s, each with one or more <name> (the chain
ids it serves) and either a <bndbox> (xmin ymin xmax ymax, 1-based pixels, inclusive) or <scene>/<nobndbox>
flags. ElementTree keeps no line numbers, so a small expat tree does, and every error names file and line.
"""

from __future__ import annotations

import collections
import dataclasses
import xml.parsers.expat
from pathlib import Path

from captioner.data.readers import ReaderError


@dataclasses.dataclass
class _Element:
    tag: str
    line: int
    text: str = ""
    children: list = dataclasses.field(default_factory=list)

    def all(self, tag: str) -> list[_Element]:
        return [child for child in self.children if child.tag == tag]

    def one(self, tag: str, path: Path) -> _Element:
        found = self.all(tag)
        if not found:
            raise ReaderError(f"{path}:{self.line}: <{self.tag}> has no <{tag}>")
        return found[0]

    def number(self, tag: str, path: Path) -> int:
        child = self.one(tag, path)
        try:
            return int(child.text.strip())
        except ValueError:
            problem = f"<{tag}> must be a whole number, got {child.text.strip()!r}"
            raise ReaderError(f"{path}:{child.line}: {problem}") from None


def _parse_xml(path: Path) -> _Element:
    """The file's element tree, each element with its line (ElementTree keeps none), or ReaderError file:line."""
    parser = xml.parsers.expat.ParserCreate()
    stack = [_Element("", 0)]

    def start(tag, attributes):
        element = _Element(tag, parser.CurrentLineNumber)
        stack[-1].children.append(element)
        stack.append(element)

    def text(data):
        stack[-1].text += data

    parser.StartElementHandler, parser.CharacterDataHandler = start, text
    parser.EndElementHandler = lambda tag: stack.pop()
    try:
        parser.Parse(path.read_bytes(), True)
    except xml.parsers.expat.ExpatError as error:
        problem = xml.parsers.expat.ErrorString(error.code)
        raise ReaderError(f"{path}:{error.lineno}: malformed XML ({problem})") from None
    return stack[0].children[0]


def _flag(element: _Element, tag: str, path: Path) -> bool:
    return bool(element.all(tag)) and element.number(tag, path) > 0


def read_boxes(path: Path):
    """(width, height, chain -> boxes, scene chains, no-box chains) of an Annotations file."""
    root = _parse_xml(path)
    if root.tag != "annotation":
        raise ReaderError(f"{path}:{root.line}: expected <annotation>, got <{root.tag}>")
    size = root.one("size", path)
    width, height = size.number("width", path), size.number("height", path)
    if width <= 0 or height <= 0:
        raise ReaderError(f"{path}:{size.line}: image size must be positive, got {width}x{height}")
    boxes, scene, no_box = collections.defaultdict(list), set(), set()
    for element in root.all("object"):
        names = element.all("name")
        if not names:
            raise ReaderError(f"{path}:{element.line}: <object> has no <name> (chain id)")
        chains = []
        for name in names:
            if not name.text.strip().isdigit():
                problem = f"<name> must be a chain id (a whole number), got {name.text.strip()!r}"
                raise ReaderError(f"{path}:{name.line}: {problem}")
            chains.append(int(name.text))
        if element.all("bndbox"):
            box_element = element.one("bndbox", path)
            box = tuple(box_element.number(tag, path) for tag in ("xmin", "ymin", "xmax", "ymax"))
            if box[0] > box[2] or box[1] > box[3]:
                raise ReaderError(f"{path}:{box_element.line}: box {box} has xmin > xmax or ymin > ymax")
            for chain in chains:  # one box may serve several chains
                boxes[chain].append(box)
        elif element.all("scene") or element.all("nobndbox"):
            if _flag(element, "scene", path):
                scene.update(chains)
            if _flag(element, "nobndbox", path):
                no_box.update(chains)
        else:
            raise ReaderError(f"{path}:{element.line}: <object> has neither <bndbox> nor <scene>/<nobndbox>")
    return width, height, {chain: tuple(found) for chain, found in boxes.items()}, frozenset(scene), frozenset(no_box)
