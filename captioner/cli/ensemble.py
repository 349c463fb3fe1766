"""Average several trained models' decoders into one model file: `captioner ensemble OUT.keras A.keras B.keras ...`.

`captioner ensemble --unpack ENSEMBLE.keras OUT_DIR` does the reverse: one model file per member
(OUT_DIR/member_0.keras, ...), to train the members further and ensemble them again.

Runs of one recipe with different seeds make a better model together than any of them alone
(docs/results.md); the ensemble shares one encoder (the first member's; encoders that differ only by the
rounding of a stored file are the same network) and is used like any model. Members fine-tuned with
`--fine-tune-encoder` share its frozen part and keep their own fine-tuned blocks. Members trained with
`--attention hard` make a hard ensemble: for every word they read one cell between them, the argmax of their
mean attention (soft and hard members do not mix).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from captioner.utils.quiet import import_tensorflow_quietly


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="captioner ensemble", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the ensemble's .keras file (with --unpack: the directory for the members)")
    parser.add_argument("members", nargs="*",
                        help="trained models (.keras) to average; one model is stored again with the decoding and "
                             "storage given (how a single model, a hard-attention one too, is readied for shipping)")
    parser.add_argument("--unpack", metavar="ENSEMBLE", help="write each member of this ensemble as its own model file")
    parser.add_argument("--length-penalty", type=float, default=0.0, metavar="P",
                        help="the length penalty the ensemble's beam search uses unless told otherwise: choose it on "
                             "dev (captioner evaluate --split val --length-penalty P); 0: none")
    parser.add_argument("--no-repeat-ngram", type=int, default=0, metavar="N",
                        help="the ensemble's beam search never writes an N-gram twice in one caption, unless told "
                             "otherwise (choose on dev like the length penalty); 0: repeats allowed")
    storage = parser.add_mutually_exclusive_group()
    storage.add_argument("--float32", action="store_true",
                         help="store float32 weights (default: float16, half the file; computation is float32 either way)")
    storage.add_argument("--packed", action="store_true",
                         help="store each big weight matrix to 1/32 of its standard deviation (HDF5's scale-offset "
                              "filter), the rest as float16: about 40 %% smaller than float16; measure it on dev")
    args = parser.parse_args(argv)
    weights_dtype = "float32" if args.float32 else "packed" if args.packed else "float16"
    if args.unpack:
        if args.members:
            parser.error("--unpack takes the ensemble and one output directory, no member models")
        if args.length_penalty or args.no_repeat_ngram:
            parser.error("--length-penalty and --no-repeat-ngram set an ensemble's decoding; --unpack writes its "
                         "members as they were trained")
        return unpack(args.unpack, args.out, weights_dtype)
    if not args.members:
        parser.error("give the member models (or one model to store with its decoding)")
    if not args.out.endswith(".keras"):
        parser.error(f"{args.out}: the output must be a .keras file")
    if not 0 <= args.length_penalty < 10:
        parser.error(f"--length-penalty must be in [0, 10), not {args.length_penalty}")
    if args.no_repeat_ngram < 0:
        parser.error(f"--no-repeat-ngram must not be negative, not {args.no_repeat_ngram}")

    import_tensorflow_quietly()
    from captioner.model.captioner import make_ensemble
    from captioner.model.saving import load_captioner, save_model

    try:
        models = [load_captioner(path) for path in args.members]
        if len(models) == 1:  # nothing to average: the model as it is, with this decoding and storage
            ensemble = models[0]
            ensemble.length_penalty, ensemble.no_repeat_ngram = args.length_penalty, args.no_repeat_ngram
        else:
            ensemble = make_ensemble(models, length_penalty=args.length_penalty, no_repeat_ngram=args.no_repeat_ngram)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    save_model(ensemble, args.out, weights_dtype=weights_dtype)
    parameters = sum(int(np.prod(w.shape)) for w in ensemble.decoder.weights)
    penalty = f", length penalty {args.length_penalty:g}" if args.length_penalty else ""
    penalty += f", no repeated {args.no_repeat_ngram}-grams" if args.no_repeat_ngram else ""
    print(f"Wrote {args.out}: {len(models)} decoders ({parameters / 1e6:.1f} M parameters) over one encoder{penalty}")
    return 0



def unpack(ensemble_path: str, out_dir: str, weights_dtype: str) -> int:
    """Each member of an ensemble as its own model file in out_dir; returns the exit status."""
    import_tensorflow_quietly()
    from pathlib import Path

    from captioner.model.captioner import ensemble_members
    from captioner.model.saving import load_captioner, save_model

    try:
        members = ensemble_members(load_captioner(ensemble_path))
    except ValueError as error:
        print(f"error: {ensemble_path}: {error}" if ensemble_path not in str(error) else f"error: {error}", file=sys.stderr)
        return 1
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for index, member in enumerate(members):
        save_model(member, Path(out_dir) / f"member_{index}.keras", weights_dtype=weights_dtype)
    print(f"Wrote {len(members)} member models to {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
