"""The paper's Figure 2 on a real photo: the shipped soft and hard models, word by word, one row each.

    python bench/soft_vs_hard_figure.py PHOTO [OUT.jpg] [--beam 3]

Soft attention's row shows alpha over the photo; hard attention's shows alpha too, with the one cell the word
was read from outlined. The README's figure is this script's output on a Flickr8k dev photo.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from captioner.data.images import load_images
from captioner.model.shipped import SHIPPED_MODELS
from captioner.numpy_model import load_numpy_captioner
from captioner.visualize.overlay import draw_comparison

JPEG_QUALITY = 85


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photo")
    parser.add_argument("out", nargs="?", default="docs/soft_vs_hard.jpg")
    parser.add_argument("--beam", type=int, default=3)
    args = parser.parse_args(argv)
    rows = []
    for name in ("soft", "hard"):
        model = load_numpy_captioner(SHIPPED_MODELS[name])
        image, display = load_images(args.photo, model.encoder.image_size)
        caption = model.caption(image[None], args.beam)[0]
        print(f"{name}: {caption.text}")
        rows.append((f"{name} attention", caption.words, caption.attention, caption.chosen_cells))
    draw_comparison(display, rows, Path(args.out).with_suffix(".png"))
    Image.open(Path(args.out).with_suffix(".png")).convert("RGB").save(args.out, quality=JPEG_QUALITY)
    if Path(args.out).suffix != ".png":
        Path(args.out).with_suffix(".png").unlink()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
