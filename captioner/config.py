"""One object holds every setting of a training run; it is saved as config.json in the run directory."""

from __future__ import annotations

import dataclasses
import json


@dataclasses.dataclass
class Config:
    # data
    dataset: str = "synthetic"
    data_dir: str | None = None
    synthetic_train_scenes: int = 4000
    synthetic_val_scenes: int = 200
    synthetic_test_scenes: int = 200
    max_train_images: int | None = None  # use only the first N training images (quick experiments)
    feature_cache: str | None = None  # default: $CAPTIONER_CACHE/features or ~/.cache/captioner/features
    max_length: int = 20  # words per caption; longer ones are cut
    min_word_count: int = 1  # rarer words become <unk>

    # encoder
    backbone: str = "mobilenet_v2"
    weights: str | None = "imagenet"  # None: random initialisation (tests)
    image_size: int | None = None  # None: the backbone's own (224 for MobileNetV2; 448 gives a 14x14 grid)
    encoder_layer: str | None = None  # None: the backbone's last convolutional block
    # Train the encoder's last N blocks with the decoder (0: frozen). What lies below them is computed once
    # per image and cached; BatchNorm stays in inference mode.
    fine_tune_encoder: int = 0
    encoder_learning_rate: float = 1e-4  # the fine-tuned blocks' peak learning rate (the decoder's: learning_rate)
    # Colour-jittered copies of each training image, cached beside it; epoch e reads copy e mod (N + 1), 0 the
    # original (`captioner.data.images.jitter_colours`: nothing a caption or a box says changes).
    augment_copies: int = 0

    # decoder
    attention: str = "additive"  # additive | dot | general | scaled_dot
    embedding_dim: int = 128
    units: int = 512
    attention_units: int = 256
    feature_units: int | None = 512  # None: attend over the raw CNN features, as in the paper
    location_embedding: bool = True
    dropout: float = 0.5
    hard_attention: bool = False  # sample one location per word (trained with REINFORCE) instead of soft attention
    hard_inference: str = "argmax"  # hard attention when captioning: argmax location | expected context
    # How hard attention's location policy is trained (`captioner.training.objectives`, docs/results.md):
    #   paper: the caption's log-likelihood as one reward, a moving-average baseline; the state carries the drawn cell
    #   expected-baseline: a reward per word, log p(word | drawn cell) - log p(word | expected context)
    #   leave-one-out: a reward per word, each of hard_cells draws against the mean of the others
    #   top-k: no sampling: the exact sum over the hard_cells most likely cells (for comparison)
    # All but `paper` carry the expected context's state forward (the decoder's hard_state="expected").
    hard_estimator: str = "paper"
    hard_cells: int = 1  # cells drawn (or summed over, top-k) per word; leave-one-out needs 2 or more
    # Hard attention with attention supervision: this much reward for a drawn cell, times the share of it
    # the word's boxes cover (0: the boxes only pull alpha, through the supervision loss)
    box_reward: float = 0.0

    # optimisation
    epochs: int = 10
    batch_size: int = 64
    batch_by_length: bool = True  # batches of similar caption length (faster); False: random batches
    learning_rate: float = 1e-3
    lr_schedule: str = "cosine"  # constant | cosine (decays to 1% over all epochs)
    attention_lambda: float = 1.0  # weight of the doubly stochastic attention penalty
    label_smoothing: float = 0.0  # share of each target word's probability spread over the vocabulary
    # Hard attention's REINFORCE weights (the paper's lambda_r and lambda_e). On synthetic scenes 10 and
    # 0.001 beat 1 and 0.01 on every caption score and on grounding (docs/results.md).
    reward_scale: float = 10.0
    entropy_bonus: float = 0.001
    clip_norm: float = 5.0
    jit_compile: bool = True  # compile the one-device training steps with XLA (faster; bench/RESULTS.md)
    seed: int = 0
    validation_beam: int = 1  # beam size of the free-running validation captions
    best_metric: str = "cider"  # validation score that picks the best checkpoint: cider | bleu4 | exact_match
    early_stopping_patience: int | None = 3  # stop after this many epochs without a better best_metric
    lr_plateau_patience: int | None = 2  # halve the learning rate after this many epochs without one
    lr_plateau_factor: float = 0.5

    # fine-tuning
    init_model: str | None = None  # start from this .keras model (its architecture, vocabulary and weights)
    self_critical: bool = False  # self-critical sequence training: REINFORCE with CIDEr-D rewards (needs init_model)
    scst_samples: int = 1  # captions sampled per image; 1: the greedy caption is the baseline, K > 1: the other samples' mean

    # attention supervision (Liu et al. 2017): alpha pulled toward the boxes of the training captions' phrases
    attention_supervision: str | None = None  # a Flickr30k Entities folder (Annotations/, Sentences/); None: off
    supervision_weight: float = 1.0  # weight of the attention supervision loss beside the cross-entropy
    supervision_loss: str = "cross-entropy"  # or "mass" (-log of the attention inside the boxes), "pointing" (objectives.py)

    # knowledge distillation (Hinton et al. 2015): a trained model's next-word distributions as a second target
    distill_from: str | None = None  # the teacher: a .keras model (an ensemble too) with the same vocabulary; None: off
    distill_weight: float = 0.5  # share of the word loss that is the teacher's distribution; the rest, the caption's word

    run_dir: str | None = None

    def __post_init__(self):
        if self.image_size is None:
            from captioner.model.encoder import default_image_size

            self.image_size = default_image_size(self.backbone)

    @classmethod
    def for_dataset(cls, dataset: str, **overrides) -> "Config":
        """The defaults that suit `dataset`, then `overrides`."""
        values = {**DATASET_DEFAULTS.get(dataset, {}), **overrides}
        if values.get("backbone", cls.backbone) != cls.backbone and "encoder_layer" not in overrides:
            values.pop("encoder_layer", None)  # preset layers are named for the default backbone
        return cls(dataset=dataset, **values)

    def encoder_kwargs(self) -> dict:
        return dict(backbone=self.backbone, weights=self.weights, image_size=self.image_size, layer=self.encoder_layer,
                    fine_tune_blocks=self.fine_tune_encoder)

    def decoder_kwargs(self) -> dict:
        return dict(
            embedding_dim=self.embedding_dim,
            units=self.units,
            attention=self.attention,
            attention_units=self.attention_units,
            feature_units=self.feature_units,
            location_embedding=self.location_embedding,
            dropout=self.dropout,
            hard_attention=self.hard_attention,
            hard_inference=self.hard_inference,
            hard_state=self.hard_state,
            seed=self.seed,
        )

    @property
    def hard_state(self) -> str:
        """What a hard-attention decoder carries to the next word (`DecoderWithAttention`'s hard_state)."""
        return "sampled" if self.hard_estimator == "paper" else "expected"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "Config":
        values = json.loads(text)
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
        return cls(**values)


# Per-dataset defaults. Synthetic shapes are told apart by local colour and edges: MobileNetV2's
# last block mixes the whole image into every grid cell and attention then fails to find the
# shapes, so the demo cuts at a middle block (14x14x576 at 224 px; see docs/synthetic.md).
# A smaller decoder and a higher learning rate fit its 5-minute budget on 2 CPU cores.
REAL_PHOTOS = dict(min_word_count=5, epochs=10)
DATASET_DEFAULTS = {
    "flickr8k": REAL_PHOTOS,
    "flickr30k": REAL_PHOTOS,
    "karpathy": REAL_PHOTOS,
    "coco": REAL_PHOTOS,
    "csv": dict(min_word_count=2, epochs=10),
    "synthetic": dict(
        encoder_layer="block_13_expand_relu",
        units=256,
        feature_units=128,  # the projection of 196 cells' 576 features is most of a step: 256 cost 1.3x the time
        attention_units=128,
        dropout=0.3,
        learning_rate=3e-3,
        # Batches of 32 and no doubly stochastic penalty: held-out exact match 0.96 to 0.97 and grounding 15 to 22x
        # over three seeds, where batches of 64 with the penalty gave 0.985 for one seed and 0.885 for the next
        # (the penalty spreads each map over cells no word names; docs/synthetic.md). About 18 % more time.
        batch_size=32,
        attention_lambda=0.0,
        epochs=7,
        best_metric="exact_match",
        # Exact match sits near 0 for the first epochs and then jumps: a plateau rule would cut the
        # learning rate (or stop) before the jump. The short cosine schedule needs neither.
        lr_plateau_patience=None,
        early_stopping_patience=None,
        # Caption length gives away the number of shapes; batches of one length converge slower
        # (test exact match 0.77 instead of 0.95, see docs/synthetic.md).
        batch_by_length=False,
    ),
}
