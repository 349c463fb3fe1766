"""Caption photos with an exported LiteRT file alone: what the command line's quick path would be with LiteRT.

    python bench/litert_caption.py EXPORT_DIR photo.jpg [photo2.jpg ...]     # prints `path: caption`, as predict.py

Imports only ai-edge-litert, NumPy and Pillow (no TensorFlow, no captioner), reads each photo as the command
line does (RGB, squeezed to the encoder's size, bilinear), runs the file with the beam search inside and prints
the best caption. bench/cold_start.py --litert EXPORT_DIR times it against `predict.py` (the NumPy copy).
"""

import json
import sys
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from PIL import Image


def main(argv=None) -> int:
    export_dir, *paths = argv if argv is not None else sys.argv[1:]
    meta = json.loads((Path(export_dir) / "captioner.json").read_text())
    interpreter = Interpreter(model_path=str(Path(export_dir) / "captioner.tflite"))
    interpreter.allocate_tensors()
    index = interpreter.get_input_details()[0]["index"]
    outputs = dict(zip(meta["litert_outputs"], (d["index"] for d in interpreter.get_output_details())))
    size = meta["image_size"]
    for path in paths:
        image = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
        interpreter.set_tensor(index, np.asarray(image, np.uint8)[None])
        interpreter.invoke()
        length = int(interpreter.get_tensor(outputs["lengths"])[0, 0])
        word_ids = interpreter.get_tensor(outputs["word_ids"])[0, 0, :length]
        print(f"{path}: {' '.join(meta['vocabulary'][i] for i in word_ids)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
