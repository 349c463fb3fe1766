"""Everything a run needs before its first step: the model, the image features, the caption pairs,
with `--attention-supervision` the attention targets of the training pairs and with `--distill-from` the
teacher and its features of the training images.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from captioner.config import Config
from captioner.data.datasets import Split
from captioner.data.features import DEFAULT_CACHE, FeatureStore, encode_in_memory
from captioner.data.images import jitter_colours
from captioner.data.vocabulary import Vocabulary
from captioner.model.captioner import Captioner
from captioner.model.saving import load_captioner
from captioner.training import distribute
from captioner.training.objectives import SUPERVISION_LOSSES


def make_captioner(config: Config, splits: dict[str, Split], strategy) -> tuple[Captioner, Vocabulary]:
    """A new captioner with a vocabulary of the training captions, or, with `init_model`, that model
    (fine-tuning: its own architecture, vocabulary and weights). Built under `strategy`'s scope, so the
    decoder's variables are mirrored on every replica."""
    with strategy.scope():
        if config.init_model:
            captioner = load_captioner(config.init_model)
            if captioner.is_ensemble:
                raise ValueError(f"{config.init_model}: an ensemble is not trained further; start from one of "
                                 "its members (each run's best.keras)")
            if config.fine_tune_encoder != captioner.encoder.fine_tune_blocks:
                captioner = rebuilt(captioner, encoder_changes={"fine_tune_blocks": config.fine_tune_encoder})
            if captioner.decoder.hard_attention and not config.hard_attention:
                raise ValueError(f"{config.init_model}: a hard-attention model; train it further with --attention hard "
                                 "(and its --hard-estimator)")
            hard = {"hard_attention": True, "hard_state": config.hard_state, "hard_inference": config.hard_inference}
            decoder_config = captioner.decoder.get_config()
            if config.hard_attention and any(decoder_config[key] != value for key, value in hard.items()):
                # A soft decoder has every parameter a hard one has: soft first, then REINFORCE.
                captioner = rebuilt(captioner, decoder_changes={**hard, "seed": config.seed})
            return captioner, captioner.vocabulary
        vocabulary = Vocabulary.build([c for refs in splits["train"].captions for c in refs], config.min_word_count)
        captioner = Captioner(vocabulary.words, config.encoder_kwargs(), config.decoder_kwargs(), config.max_length)
        captioner.build()
        return captioner, vocabulary


def rebuilt(captioner: Captioner, encoder_changes: dict | None = None, decoder_changes: dict | None = None) -> Captioner:
    """The same model, weights and all, with some settings changed that add or remove no weights: the encoder's
    last blocks made trainable (`fine_tune_blocks`; decoder first, then both, is a common recipe), a soft decoder
    turned into a hard-attention one."""
    encoder = {**captioner.encoder.get_config(), **(encoder_changes or {})}
    encoder.pop("name", None)
    decoder = {key: value for key, value in captioner.decoder.get_config().items() if key != "name"}
    decoder.update(decoder_changes or {})
    changed = Captioner(captioner.vocabulary.words, encoder, decoder, captioner.max_length, captioner.length_penalty)
    changed.build()
    changed.encoder.set_weights(captioner.encoder.get_weights())
    soft_variables = [v for v in changed.decoder.weights if "location_seed" not in v.path]
    source = [v for v in captioner.decoder.weights if "location_seed" not in v.path]
    for target, value in zip(soft_variables, source, strict=True):
        target.assign(value)
    return changed


def encode_splits(captioner: Captioner, splits: dict[str, Split], config: Config, strategy=None):
    """Features of every split: computed in memory for synthetic scenes, else through the disk cache.

    Images that cannot be read are reported once each and left out of their split. Under a
    multi-worker strategy the workers share the missing images out between them (the cache
    directory must be shared storage), then wait for each other.
    """
    features = {}
    store = None
    worker, workers = distribute.worker_index(strategy) if strategy is not None else (0, 1)
    for name, split in list(splits.items()):
        if not len(split):
            features[name] = np.zeros((0, *captioner.encoder.cached_shape), np.float16)
            continue
        if split.images is not None:
            features[name] = encode_in_memory(captioner.encoder, split.images, name)
            if name == "train" and config.augment_copies:
                features["train_views"] = [features[name]] + [
                    encode_in_memory(captioner.encoder, jittered(split.images, view, config.seed), f"{name} copy {view}")
                    for view in range(1, config.augment_copies + 1)]
            continue
        store = store or FeatureStore(config.feature_cache or DEFAULT_CACHE, captioner.encoder)
        views = 1 + (config.augment_copies if name == "train" else 0)
        failed = set()
        for view in range(views):
            description = f"{name} images" + (f" (augmented copy {view})" if view else "")
            failed |= store.extract_missing(split.paths, description, worker, workers, view, config.seed)
            if workers > 1:  # wait for the other workers' shards
                distribute.barrier(strategy)
                store.refresh()
                failed |= {path for path in split.paths if not store.has(path, view, config.seed)}
        if failed:
            print(f"{len(failed)} {name} images could not be read and are left out")
            splits[name] = split = split.without(failed)
        features[name] = store.view(split.paths)
        if name == "train" and config.augment_copies:
            features["train_views"] = [store.view(split.paths, view, config.seed) for view in range(views)]
    if store is not None:
        print(f"Feature cache: {store.directory} ({store.size_on_disk() / 2**20:.0f} MiB)")
    return splits, features


def jittered(images: np.ndarray, view: int, seed: int) -> np.ndarray:
    """Augmented copy number `view` of images held in memory (synthetic scenes)."""
    rng = np.random.default_rng([seed, view])
    return np.stack([jitter_colours(image, rng) for image in images])


def caption_pairs(split: Split, vocabulary: Vocabulary, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (image index, caption ids) pair of a split; ids (P, max_length + 2), padded with 0."""
    image_index = np.array([i for i, refs in enumerate(split.captions) for _ in refs], dtype=np.int64)
    token_ids = vocabulary.encode_batch([c for refs in split.captions for c in refs], max_length)
    return image_index, token_ids


def check_fine_tuning(config: Config) -> None:
    """Refuse, before any work, encoder fine-tuning that cannot run: ValueError naming the problem."""
    if config.fine_tune_encoder < 0:
        raise ValueError(f"fine_tune_encoder must be 0 (frozen) or a number of blocks, not {config.fine_tune_encoder}")
    if config.fine_tune_encoder and config.self_critical:
        raise ValueError("encoder fine-tuning trains with cross-entropy; self-critical training keeps the encoder frozen")
    if config.augment_copies < 0:
        raise ValueError(f"augment_copies must be 0 or more, not {config.augment_copies}")
    if config.augment_copies and config.self_critical:
        raise ValueError("augmented copies are read by cross-entropy epochs; self-critical training reads the originals")
    if config.fine_tune_encoder and not config.encoder_learning_rate > 0:
        raise ValueError(f"encoder_learning_rate must be positive, not {config.encoder_learning_rate}")


def check_supervision(config: Config) -> None:
    """Refuse, before any work, attention supervision that cannot run: ValueError naming the problem."""
    if not config.attention_supervision:
        return
    if not Path(config.attention_supervision).is_dir():
        raise ValueError(f"{config.attention_supervision}: no such directory (--attention-supervision wants the "
                         "Flickr30k Entities folder, with Annotations/ and Sentences/)")
    if config.supervision_loss not in SUPERVISION_LOSSES:
        raise ValueError(f"supervision_loss must be one of {', '.join(SUPERVISION_LOSSES)}, not "
                         f"{config.supervision_loss!r}")
    if not config.supervision_weight >= 0:
        raise ValueError(f"supervision_weight must be a number >= 0, not {config.supervision_weight}")
    if config.self_critical:
        raise ValueError("attention supervision trains attention with cross-entropy; not with --scst")
    if config.box_reward and not config.hard_attention:
        raise ValueError("box_reward rewards the cells hard attention draws; it needs --attention hard")


def supervision_maps(captioner: Captioner, train: Split, config: Config, pairs: int) -> np.ndarray:
    """The attention targets of the TRAIN pairs, (P, max_length + 1, L) in the order of `caption_pairs`.

    Only the training split is ever supervised: the dev and test boxes stay unseen.
    """
    from captioner.data.entities import attention_targets  # read only when this option is used

    targets, summary = attention_targets(train, config.attention_supervision, captioner.vocabulary, config.max_length,
                                         captioner.grid)
    expected = (pairs, config.max_length + 1, captioner.feature_shape[0])
    if targets.shape != expected:
        raise ValueError(f"{config.attention_supervision}: attention targets of shape {targets.shape}, "
                         f"expected {expected} (pairs, max_length + 1, grid cells)")
    print("Attention supervision (train split): " + ", ".join(f"{key} {value}" for key, value in summary.items()))
    return targets


def check_distillation(config: Config) -> None:
    """Refuse, before any work, distillation that cannot run: ValueError naming the problem."""
    if not config.distill_from:
        return
    if not Path(config.distill_from).is_file():
        raise ValueError(f"{config.distill_from}: no such file (--distill-from wants a trained .keras model)")
    if not 0 < config.distill_weight <= 1:
        raise ValueError(f"distill_weight must be in (0, 1], not {config.distill_weight}")
    if config.self_critical or config.hard_attention:
        raise ValueError("distillation trains soft attention with cross-entropy; not with --scst or --attention hard")


def load_teacher(config: Config, captioner: Captioner, train: Split) -> tuple[Captioner, object]:
    """The teacher model of `--distill-from` and its own features of the training images (through its encoder and
    the same cache: a teacher on another grid or layer reads its own shards).

    Its distributions are over its vocabulary, so it must be the student's, word for word.
    """
    teacher = load_captioner(config.distill_from)
    if teacher.vocabulary.words != captioner.vocabulary.words:
        raise ValueError(f"{config.distill_from}: the teacher's vocabulary ({len(teacher.vocabulary)} words) is not the "
                         f"student's ({len(captioner.vocabulary)}); distillation needs the same words in the same order")
    if teacher.decoder.hard_attention:
        raise ValueError(f"{config.distill_from}: a hard-attention model; its word distributions depend on sampled "
                         "locations")
    splits, features = encode_splits(teacher, {"train": train}, dataclasses.replace(config, augment_copies=0))
    if len(splits["train"]) != len(train):
        raise ValueError(f"{config.distill_from}: its encoder could not read {len(train) - len(splits['train'])} "
                         "training images the student read")
    print(f"Distilling from {config.distill_from} (weight {config.distill_weight})")
    return teacher, features["train"]
