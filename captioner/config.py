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
    max_length: int = 20  # words per caption; longer ones are cut
    min_word_count: int = 1  # rarer words become <unk>

    # encoder
    backbone: str = "mobilenet_v2"
    weights: str | None = "imagenet"  # None: random initialisation (tests)
    image_size: int = 224
    encoder_layer: str | None = None  # None: the backbone's last convolutional block

    # decoder
    attention: str = "additive"  # additive | dot | general | scaled_dot
    embedding_dim: int = 128
    units: int = 512
    attention_units: int = 256
    feature_units: int | None = 512  # None: attend over the raw CNN features, as in the paper
    location_embedding: bool = True
    dropout: float = 0.5

    # optimisation
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    attention_lambda: float = 1.0  # weight of the doubly stochastic attention penalty
    clip_norm: float = 5.0
    seed: int = 0
    validation_beam: int = 1  # beam size of the free-running validation captions

    run_dir: str | None = None

    def encoder_kwargs(self) -> dict:
        return dict(backbone=self.backbone, weights=self.weights, image_size=self.image_size, layer=self.encoder_layer)

    def decoder_kwargs(self) -> dict:
        return dict(
            embedding_dim=self.embedding_dim,
            units=self.units,
            attention=self.attention,
            attention_units=self.attention_units,
            feature_units=self.feature_units,
            location_embedding=self.location_embedding,
            dropout=self.dropout,
        )

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
