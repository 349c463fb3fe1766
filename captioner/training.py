"""The training loop, top to bottom.

1. Make a run directory and save the config and vocabulary into it.
2. Encode every image once with the frozen encoder: in memory for synthetic scenes,
   through the disk cache (`captioner.features`) for photos.
3. Each epoch: teacher-forced steps on shuffled (image, caption) pairs, then the
   dev loss and free-running dev captions scored with CIDEr-D and BLEU-4.
4. Keep the best checkpoint by `best_metric` (also as a self-contained `.keras`
   model), the last one every epoch; halve the learning rate on a plateau, stop
   early when the dev score stops improving. `--resume` continues from the last.
5. Caption the test split with the best model and report the COCO metrics.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from captioner import distribute, metrics, pipeline, reinforce
from captioner.checkpoint import load_checkpoint, save_checkpoint
from captioner.cider import CiderD
from captioner.config import Config
from captioner.datasets import Split, load_splits
from captioner.evaluate import evaluate_captions, format_table
from captioner.features import DEFAULT_CACHE, FeatureStore, encode_in_memory
from captioner.graph import compile_function
from captioner.io_utils import atomic_path, atomic_write_text
from captioner.model import Captioner, load_captioner
from captioner.overlay import draw_overlay
from captioner.vocabulary import Vocabulary, tokenize

LAST_CHECKPOINT = "checkpoints/last.npz"
BEST_CHECKPOINT = "checkpoints/best.npz"
BEST_MODEL = "best.keras"
OVERLAY_EXAMPLES = 5
EXPECTED_CONTEXT_SHARE = 0.5  # hard attention: share of batches trained with the expected context


def caption_loss(logits, targets, attention_weights, attention_lambda: float, label_smoothing: float = 0.0):
    """Cross-entropy over real words only, plus the doubly stochastic attention penalty.

    logits (B, T, V), targets (B, T) with 0 for padding, attention_weights (B, T, L).
    The penalty (paper, eq. 14) pushes every location to receive about as much
    attention in total, over the caption, as any other: (1 - sum_t alpha_ti)^2,
    here averaged over locations so that lambda does not depend on the grid size.
    Label smoothing moves `label_smoothing` of each target's probability mass to a
    uniform distribution over the vocabulary; the cross-entropy returned (for the
    logs and the dev loss) is always the plain one, so runs stay comparable.
    Under tf.distribute the sums are divided by the words (and captions) of the whole global
    batch, so the replicas' losses add up to the single-device loss.
    Returns (loss to minimise, cross-entropy, penalty).
    """
    logits, attention_weights = tf.cast(logits, tf.float32), tf.cast(attention_weights, tf.float32)  # mixed precision
    mask = tf.cast(targets != 0, tf.float32)
    words = tf.maximum(distribute.global_sum(tf.reduce_sum(mask)), 1.0)
    real = tf.cast(tf.reduce_any(targets != 0, axis=1), tf.float32)  # (B,) 0 for an all-padding stand-in row
    captions = tf.maximum(distribute.global_sum(tf.reduce_sum(real)), 1.0)
    log_probabilities = tf.nn.log_softmax(logits)  # (B, T, V)
    per_word = -target_log_probabilities(log_probabilities, targets)  # (B, T)
    cross_entropy = tf.reduce_sum(per_word * mask) / words
    objective = cross_entropy
    if label_smoothing:
        uniform = -tf.reduce_mean(log_probabilities, axis=-1)  # cross-entropy against a uniform target
        objective = (1.0 - label_smoothing) * cross_entropy + label_smoothing * tf.reduce_sum(uniform * mask) / words
    attention_per_location = tf.reduce_sum(attention_weights * mask[..., None], axis=1)  # (B, L)
    penalty = tf.reduce_sum(tf.reduce_mean(tf.square(1.0 - attention_per_location), axis=1) * real) / captions
    return objective + attention_lambda * penalty, cross_entropy, penalty


def target_log_probabilities(log_probabilities, targets):
    """log p of each target word: log_probabilities (B, T, V), targets (B, T) -> (B, T)."""
    return tf.gather(log_probabilities, targets, axis=-1, batch_dims=2)


def per_caption_mean(values, mask):
    """Mean over each caption's real words: values and mask (B, T) -> (B,)."""
    return tf.reduce_sum(values * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)


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
            features[name] = np.zeros((0, *captioner.feature_shape), np.float16)
            continue
        if split.images is not None:
            features[name] = encode_in_memory(captioner.encoder, split.images, name)
            continue
        store = store or FeatureStore(config.feature_cache or DEFAULT_CACHE, captioner.encoder)
        failed = store.extract_missing(split.paths, f"{name} images", worker, workers)
        if workers > 1:  # wait for the other workers' shards
            distribute.barrier(strategy)
            store.refresh()
            failed |= {path for path in split.paths if not store.has(path)}
        if failed:
            print(f"{len(failed)} {name} images could not be read and are left out")
            splits[name] = split = split.without(failed)
        features[name] = store.view(split.paths)
    if store is not None:
        print(f"Feature cache: {store.directory} ({store.size_on_disk() / 2**20:.0f} MiB)")
    return splits, features


def caption_pairs(split: Split, vocabulary: Vocabulary, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (image index, caption ids) pair of a split; ids (P, max_length + 2), padded with 0."""
    image_index = np.array([i for i, refs in enumerate(split.captions) for _ in refs], dtype=np.int64)
    token_ids = vocabulary.encode_batch([c for refs in split.captions for c in refs], max_length)
    return image_index, token_ids


class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A base schedule times a scale that validation can lower (reduce-on-plateau)."""

    def __init__(self, base, scale: tf.Variable):
        self.base, self.scale = base, scale

    def __call__(self, step):
        base = self.base(step) if callable(self.base) else self.base
        return tf.cast(base, tf.float32) * self.scale

    def get_config(self):
        return {}


class TrainingDiverged(RuntimeError):
    """The loss stopped being a finite number."""


def learning_rate_schedule(config: Config, total_steps: int, scale: tf.Variable):
    """Constant, or cosine decay to 1% over the whole run (smaller steps once the model is close); times `scale`."""
    if config.lr_schedule == "constant":
        base = config.learning_rate
    elif config.lr_schedule == "cosine":
        base = keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=max(total_steps, 1), alpha=0.01)
    else:
        raise ValueError(f"unknown lr_schedule {config.lr_schedule!r}; use constant or cosine")
    return ScaledSchedule(base, scale)


class Trainer:
    """Holds the model, optimizer and compiled steps; `train()` below drives it.

    `strategy` (tf.distribute): the captioner must have been built under its scope. Each
    training step then runs on every replica with its slice of the global batch
    (`captioner.distribute`).
    """

    def __init__(self, captioner: Captioner, config: Config, total_steps: int = 1, strategy=None):
        self.captioner = captioner
        self.config = config
        self.decoder = captioner.decoder
        self.strategy = strategy or tf.distribute.get_strategy()
        self.distributed = distribute.is_distributed(self.strategy)
        if self.distributed and (config.hard_attention or config.self_critical):
            raise ValueError("hard attention and self-critical training run on one device only (--strategy default)")
        with self.strategy.scope():
            self.lr_scale = tf.Variable(1.0, trainable=False, name="lr_scale")
            self.schedule = learning_rate_schedule(config, total_steps, self.lr_scale)
            self.optimizer = keras.optimizers.Adam(learning_rate=self.schedule)
            self.optimizer.build(self.decoder.trainable_variables)
            # Hard attention's moving-average reward baseline; saved with the weights.
            self.reward_baseline = keras.Variable(0.0, trainable=False, name="reward_baseline")
            self.baseline_started = keras.Variable(False, trainable=False, dtype="bool", name="baseline_started")
        self._compiled = {}  # (step, caption length) -> tf.function; the decoder unrolls over the length
        if self.distributed:
            self.local_replicas = distribute.local_replica_ids(self.strategy)

    def _compiled_step(self, step, token_length: int, extra=()):
        """`step` compiled for captions of `token_length` ids; `extra`: specs of further (B,) inputs."""
        key = (step.__name__, token_length)
        if key not in self._compiled:
            locations, size = self.captioner.feature_shape
            signature = [tf.TensorSpec([None, locations, size], tf.float32), tf.TensorSpec([None, token_length], tf.int32),
                         *extra]
            self._compiled[key] = compile_function(step, signature, jit_compile=self.config.jit_compile)
        return self._compiled[key]

    def train_step(self, features, token_ids):
        """One optimizer step on a batch; returns loss, cross-entropy, attention penalty, gradient norm.

        Distributed: features and token_ids are tuples of this process's replica slices (`run_epoch`).
        """
        if self.distributed:
            return self._distributed_train_step(features, token_ids)
        return self._compiled_step(self._train_step, token_ids.shape[1])(features, token_ids)

    def _distributed_train_step(self, feature_parts, token_parts):
        """`_train_step` on every replica; the replicas' losses add up (each is a share of the global mean)."""
        # One graph per shape of this process's slices, so a shape seen before never retraces.
        key = ("distributed_train_step", int(token_parts[0].shape[1]), *(int(part.shape[0]) for part in token_parts))
        if key not in self._compiled:
            reductions = [tf.distribute.ReduceOp.SUM] * 3 + [tf.distribute.ReduceOp.MEAN]  # the norm is the same everywhere

            def step(features, token_ids):
                results = self.strategy.run(self._train_step, args=(features, token_ids))
                return [self.strategy.reduce(op, value, axis=None) for op, value in zip(reductions, results)]

            self._compiled[key] = compile_function(step, None)  # per-replica values take no input signature
        part = {replica: index for index, replica in enumerate(self.local_replicas)}
        features, token_ids = (self.strategy.experimental_distribute_values_from_function(
            lambda context, parts=parts: parts[part[context.replica_id_in_sync_group]]) for parts in (feature_parts, token_parts))
        return self._compiled[key](features, token_ids)

    def eval_step(self, features, token_ids):
        return self._compiled_step(self._eval_step, token_ids.shape[1])(features, token_ids)

    def hard_train_step(self, features, token_ids):
        """One step with sampled locations: loss, cross-entropy, penalty, gradient norm, reward, baseline, entropy."""
        return self._compiled_step(self._hard_train_step, token_ids.shape[1])(features, token_ids)

    def _train_step(self, features, token_ids):
        inputs, targets = token_ids[:, :-1], token_ids[:, 1:]  # predict each next word
        with tf.GradientTape() as tape:
            logits, attention_weights = self.decoder(features, inputs, training=True)
            loss, cross_entropy, penalty = caption_loss(logits, targets, attention_weights,
                                                        self.config.attention_lambda, self.config.label_smoothing)
        return loss, cross_entropy, penalty, self._apply_gradients(tape, loss)

    def _apply_gradients(self, tape, loss):
        """One clipped optimizer step on the decoder; returns the gradient norm before clipping.

        Distributed, the norm is that of the gradient summed over replicas, as on one device. Keras's
        optimizer sums the gradients it is given over the replicas once more, so each replica hands it
        an equal share of the clipped sum.
        """
        variables = self.decoder.trainable_variables
        # Dense: the embedding's sparse gradient repeats a row per occurrence of a word, and clipping
        # would measure those copies' norm rather than the gradient's.
        gradients = [tf.convert_to_tensor(gradient) for gradient in tape.gradient(loss, variables)]
        replicas = self.strategy.num_replicas_in_sync
        if replicas > 1:
            gradients = distribute.global_sum(gradients)
        gradients, gradient_norm = tf.clip_by_global_norm(gradients, self.config.clip_norm)
        if replicas > 1:
            gradients = [gradient / replicas for gradient in gradients]
        self.optimizer.apply_gradients(zip(gradients, variables))
        return gradient_norm

    def _hard_train_step(self, features, token_ids):
        """The paper's hard-attention objective (section 4.1) with one location sampled per word.

        The caption's log-likelihood given the sampled locations trains the decoder as usual; REINFORCE
        trains the location policy with that log-likelihood (per word, so long captions do not get
        larger rewards) as the reward, minus a moving-average baseline, times `reward_scale`; an entropy
        bonus keeps the attention from settling on one place too soon.
        """
        inputs, targets = token_ids[:, :-1], token_ids[:, 1:]
        mask = tf.cast(targets != 0, tf.float32)
        with tf.GradientTape() as tape:
            logits, attention_weights, chosen = self.decoder.sample_locations(features, inputs, training=True)
            loss, cross_entropy, penalty = caption_loss(logits, targets, attention_weights,
                                                        self.config.attention_lambda, self.config.label_smoothing)
            log_likelihood = per_caption_mean(target_log_probabilities(tf.nn.log_softmax(logits), targets), mask)
            chosen_weight = tf.gather(attention_weights, chosen, axis=2, batch_dims=2)  # alpha of the sampled cell
            log_policy = per_caption_mean(tf.math.log(chosen_weight + reinforce.EPSILON), mask)
            entropy = per_caption_mean(reinforce.entropy(attention_weights), mask)
            policy_loss = reinforce.policy_gradient_loss(log_policy, log_likelihood, self.reward_baseline)
            total = loss + self.config.reward_scale * policy_loss - self.config.entropy_bonus * tf.reduce_mean(entropy)
        gradient_norm = self._apply_gradients(tape, total)
        reward = tf.reduce_mean(log_likelihood)
        self.reward_baseline.assign(reinforce.moving_average_baseline(self.reward_baseline, log_likelihood,
                                                                      self.baseline_started))
        self.baseline_started.assign(True)
        return loss, cross_entropy, penalty, gradient_norm, reward, self.reward_baseline.value, tf.reduce_mean(entropy)

    def self_critical_step(self, features, token_ids, rewards, baselines):
        """REINFORCE on whole sampled captions: token_ids (B, T) are `<start>` + a sample + `<end>`."""
        per_caption = tf.TensorSpec([None], tf.float32)
        return self._compiled_step(self._self_critical_step, token_ids.shape[1], (per_caption, per_caption))(
            features, token_ids, rewards, baselines)

    def _self_critical_step(self, features, token_ids, rewards, baselines):
        """Rennie et al. 2017: raise log p(sample) in proportion to how much its CIDEr-D beats its baseline.

        No dropout: the gradient is of the same policy that drew the samples.
        """
        inputs, targets = token_ids[:, :-1], token_ids[:, 1:]
        mask = tf.cast(targets != 0, tf.float32)
        with tf.GradientTape() as tape:
            logits, _ = self.decoder(features, inputs, training=False)
            word_log_probabilities = target_log_probabilities(tf.nn.log_softmax(logits), targets)
            log_probability = tf.reduce_sum(word_log_probabilities * mask, axis=1)  # (B,) of each whole sample
            loss = reinforce.policy_gradient_loss(log_probability, rewards, baselines)
        return loss, self._apply_gradients(tape, loss)

    def run_self_critical_epoch(self, features, references: list[list[str]], cider: CiderD, epoch: int) -> dict:
        """One pass over the training images, rewarding sampled captions by how much their CIDEr-D beats a baseline.

        The baseline: the greedy caption's CIDEr-D (Rennie et al. 2017), or with `scst_samples` K > 1,
        K samples per image each measured against the mean of the other K - 1 (Luo 2020): half the
        samples then beat their baseline, where a model that already knows its training captions
        leaves almost every sample below its greedy caption.
        """
        vocabulary = self.captioner.vocabulary
        samples = self.config.scst_samples
        order = np.random.default_rng([self.config.seed, epoch, 2]).permutation(len(features))
        batches = [order[i : i + self.config.batch_size] for i in range(0, len(order), self.config.batch_size)]
        progress = keras.utils.Progbar(len(batches), stateful_metrics=["sample", "baseline"])
        sample_scores, baseline_scores, gradient_norms = [], [], []
        for step, batch in enumerate(batches):
            batch = np.sort(batch)  # sorted reads from the memory-mapped cache
            batch_features = np.asarray(features[batch], dtype=np.float32)
            batch_references = [references[i] for i in batch]
            if samples > 1:
                batch_features = np.repeat(batch_features, samples, axis=0)  # K rows per image
                batch_references = [refs for refs in batch_references for _ in range(samples)]
            sampled_ids = self.captioner.sample_features(batch_features, seed=(self.config.seed, epoch * 100_003 + step))
            sample_reward = cider.scores([vocabulary.decode(ids) for ids in sampled_ids], batch_references)
            if samples > 1:
                per_image = sample_reward.reshape(-1, samples)
                baseline = ((per_image.sum(axis=1, keepdims=True) - per_image) / (samples - 1)).ravel()
            else:
                baseline = cider.scores([c.words for c in self.captioner.decode_features(batch_features)],
                                        batch_references)
            token_ids = self._sample_token_ids(sampled_ids)
            loss, gradient_norm = self.self_critical_step(batch_features, token_ids, sample_reward, baseline)
            if not np.isfinite(float(loss)):
                raise TrainingDiverged(f"the loss became {float(loss)} at epoch {epoch + 1}, step {step + 1}")
            sample_scores.extend(sample_reward)
            baseline_scores.extend(baseline)
            gradient_norms.append(float(gradient_norm))
            progress.update(step + 1, [("sample", float(np.mean(sample_scores))), ("baseline", float(np.mean(baseline_scores)))])
        return {"captions": len(sample_scores), "sample_cider": float(np.mean(sample_scores)),
                "baseline_cider": float(np.mean(baseline_scores)),
                "reward": float(np.mean(np.subtract(sample_scores, baseline_scores))),
                "gradient_norm": float(np.mean(gradient_norms))}

    def _sample_token_ids(self, sampled_ids: np.ndarray) -> np.ndarray:
        """`<start>` + each sample up to its first `<end>` (kept), then padding: (B, T) with T the batch's
        longest, rounded up to a multiple of LENGTH_STEP. sampled_ids (B, max_length + 1) always hold an `<end>`.
        """
        vocabulary = self.captioner.vocabulary
        lengths = np.argmax(sampled_ids == vocabulary.end_id, axis=1) + 1  # words and the `<end>`
        token_ids = np.zeros((len(sampled_ids), 1 + sampled_ids.shape[1]), np.int32)
        token_ids[:, 0] = vocabulary.start_id
        keep = np.arange(sampled_ids.shape[1])[None, :] < lengths[:, None]
        token_ids[:, 1:] = np.where(keep, sampled_ids, 0)
        return token_ids[:, : min(pipeline.padded_length(int(lengths.max()) + 1), token_ids.shape[1])]

    def _eval_step(self, features, token_ids):
        inputs, targets = token_ids[:, :-1], token_ids[:, 1:]
        logits, attention_weights = self.decoder(features, inputs, training=False)
        return caption_loss(logits, targets, attention_weights, self.config.attention_lambda)

    def model_variables(self):
        """Weights and the random seed states, so a resumed run draws the same dropout masks (and locations)."""
        if self.decoder.hard_attention:
            return [*self.decoder.variables, self.reward_baseline, self.baseline_started]
        return self.decoder.variables

    def run_epoch(self, features, image_index, token_ids, epoch: int) -> dict[str, float]:
        batches = pipeline.epoch_batches(token_ids, self.config.batch_size, self.config.seed, epoch,
                                         by_length=self.config.batch_by_length)
        # Hard attention: half the batches (the paper's choice) use the expected context, the rest sample.
        sampled = np.random.default_rng([self.config.seed, epoch, 1]).random(len(batches)) >= EXPECTED_CONTEXT_SHARE
        sampled &= self.decoder.hard_attention
        progress = keras.utils.Progbar(len(batches), stateful_metrics=["loss", "xent", "attn", "reward", "baseline"])
        totals, gradient_norms, hard = np.zeros(3), [], []
        captions = 0
        if self.distributed:  # this process reads only its replicas' rows of each global batch
            dataset = pipeline.make_replica_dataset(features, image_index, token_ids, batches,
                                                    self.strategy.num_replicas_in_sync, self.local_replicas)
        else:
            dataset = pipeline.make_dataset(features, image_index, token_ids, batches)
        for step, (batch_features, batch_ids) in enumerate(dataset):
            if sampled[step]:
                loss, cross_entropy, penalty, gradient_norm, reward, baseline, entropy = self.hard_train_step(
                    batch_features, batch_ids)
                hard.append([float(reward), float(baseline), float(entropy)])
            else:
                loss, cross_entropy, penalty, gradient_norm = self.train_step(batch_features, batch_ids)
            if not np.isfinite(float(loss)):
                # The step already spoiled the weights in memory; the checkpoints on disk are from before it.
                raise TrainingDiverged(f"the loss became {float(loss)} at epoch {epoch + 1}, step {step + 1}")
            totals += [float(loss), float(cross_entropy), float(penalty)]
            gradient_norms.append(float(gradient_norm))
            captions += len(batches[step])
            mean = totals / (step + 1)
            shown = [("loss", mean[0]), ("xent", mean[1]), ("attn", mean[2])]
            if hard:
                shown += [("reward", hard[-1][0]), ("baseline", hard[-1][1])]
            progress.update(step + 1, shown)
        row = {"train_loss": totals[0] / len(batches), "train_cross_entropy": totals[1] / len(batches),
               "captions": captions, "gradient_norm": float(np.mean(gradient_norms))}
        if hard:
            first, last = np.mean(hard[: max(1, len(hard) // 4)], axis=0), np.mean(hard[-max(1, len(hard) // 4):], axis=0)
            row.update({"hard_batches": len(hard), "reward": float(np.mean([h[0] for h in hard])),
                        "reward_first_quarter": float(first[0]), "reward_last_quarter": float(last[0]),
                        "baseline": hard[-1][1], "attention_entropy": float(np.mean([h[2] for h in hard]))})
        return row

    def validation_loss(self, features, image_index, token_ids) -> float:
        batches = pipeline.sequential_batches(len(image_index), self.config.batch_size)
        losses, sizes = [], []
        for batch_features, batch_ids in pipeline.make_dataset(features, image_index, token_ids, batches):
            losses.append(float(self.eval_step(batch_features, batch_ids)[0]))
            sizes.append(int(batch_ids.shape[0]))
        return float(np.average(losses, weights=sizes))


def caption_features(captioner: Captioner, features, beam_size: int = 1, batch_size: int = 100,
                     length_penalty: float = 0.0):
    """Free-running captions for features (N, L, D), in batches (features may be a memory-mapped view)."""
    captions = []
    for start in range(0, len(features), batch_size):
        batch = np.asarray(features[start : start + batch_size], dtype=np.float32)
        captions.extend(captioner.decode_features(batch, beam_size=beam_size, length_penalty=length_penalty))
    return captions


def score_captions(captions, split: Split) -> dict[str, float]:
    """BLEU-1..4 (nltk corpus BLEU), CIDEr-D and, for synthetic scenes, exact match and attention grounding."""
    hypotheses = [c.words for c in captions]
    scores = metrics.bleu_scores(hypotheses, split.captions)
    scores["cider"] = metrics.cider_d(hypotheses, split.captions)
    return {**scores, **synthetic_scores(captions, split)}


def synthetic_scores(captions, split: Split) -> dict[str, float]:
    """Exact match, attention grounding and peaks, for splits with ground truth (synthetic scenes); else nothing."""
    if split.scenes is None:
        return {}
    return {
        "exact_match": metrics.exact_match([c.words for c in captions], split.captions),
        **metrics.attention_grounding(captions, split.scenes),
        **metrics.attention_peaks(captions, split.scenes),
    }


def _write_log(run_dir: Path, history: list[dict]) -> None:
    """metrics.csv and metrics.jsonl, rewritten whole each epoch so they are never half written."""
    columns = list(dict.fromkeys(key for row in history for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(run_dir / "metrics.csv", text.getvalue())
    atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in history))


def _write_example_scenes(split: Split, directory: Path, count: int = 8) -> None:
    """A few held-out scenes as PNG files, with their reference captions, to try predict.py on."""
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    references = {}
    for index in range(min(count, len(split))):
        name = f"scene_{index:03d}.png"
        with atomic_path(directory / name) as temporary:
            Image.fromarray(split.images[index]).save(temporary, format="PNG")
        references[name] = split.captions[index]
    atomic_write_text(directory.parent / "test_scenes.json", json.dumps(references, indent=2))


def _format_duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s"


def default_run_dir(config: Config) -> Path:
    return Path("runs") / f"{config.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


def train(config: Config, resume: bool = False, strategy: tf.distribute.Strategy | None = None) -> Path:
    """Train as `config` says, on the replicas of `strategy` (default: this device); returns the run directory.

    Under a multi-worker strategy every worker runs this same function; only the chief writes
    into the run directory, which every worker must be able to read (to resume).
    """
    strategy = strategy or tf.distribute.get_strategy()
    chief = distribute.is_chief(strategy)
    run_dir = Path(config.run_dir or default_run_dir(config))
    config.run_dir = str(run_dir)
    resuming = resume and (run_dir / LAST_CHECKPOINT).exists()
    if resume and not resuming:
        print(f"No checkpoint in {run_dir}; starting a new run there.")
    if chief:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.json", config.to_json())
    keras.utils.set_random_seed(config.seed)
    if distribute.is_distributed(strategy):
        print(f"Strategy: {distribute.describe(strategy)}, {strategy.num_replicas_in_sync} replicas, "
              f"global batch {config.batch_size}{'' if chief else ' (worker: writes nothing)'}")

    splits = load_splits(config)
    with strategy.scope():  # the decoder's variables are mirrored on every replica
        if config.init_model:  # fine-tuning (self-critical): the model's own architecture, vocabulary and weights
            captioner = load_captioner(config.init_model)
            if captioner.is_ensemble:
                raise ValueError(f"{config.init_model}: an ensemble is not trained further; start from one of "
                                 "its members (each run's best.keras)")
            vocabulary = captioner.vocabulary
        else:
            vocabulary = Vocabulary.build([c for refs in splits["train"].captions for c in refs], config.min_word_count)
            captioner = Captioner(vocabulary.words, config.encoder_kwargs(), config.decoder_kwargs(), config.max_length)
            captioner.build()
    if chief:
        vocabulary.save(run_dir / "vocabulary.json")
    print(f"Run directory: {run_dir}  vocabulary: {len(vocabulary)} words")

    splits, features = encode_splits(captioner, splits, config, strategy)
    pairs = {name: caption_pairs(split, vocabulary, config.max_length) for name, split in splits.items()}

    steps_per_epoch = math.ceil(len(pairs["train"][0]) / config.batch_size)
    if config.self_critical:
        if not config.init_model:
            raise ValueError("self-critical training starts from a trained model: give --init MODEL.keras")
        # CIDEr-D's document frequencies: the training references, tokenised like the captions.
        tokenised_train = [[tokenize(c) for c in refs] for refs in splits["train"].captions]
        cider = CiderD(tokenised_train)
        steps_per_epoch = math.ceil(len(splits["train"]) / config.batch_size)
    trainer = Trainer(captioner, config, total_steps=config.epochs * steps_per_epoch, strategy=strategy)
    history, start_epoch, best_score, best_epoch = [], 0, -math.inf, -1
    if resuming:
        state = load_checkpoint(run_dir / LAST_CHECKPOINT, trainer.model_variables(), trainer.optimizer.variables)
        history, start_epoch, best_score = state["history"], state["epoch"] + 1, state["best_score"]
        best_epoch = state["best_epoch"]
        trainer.lr_scale.assign(state["lr_scale"])
        print(f"Resumed from {run_dir / LAST_CHECKPOINT} after epoch {start_epoch}")
        if state["stopped"]:
            print("That run had stopped early; nothing more to train.")
            start_epoch = config.epochs
    best_key = f"val_{config.best_metric}"
    tensorboard = tf.summary.create_file_writer(str(run_dir / "tensorboard")) if chief else tf.summary.create_noop_writer()

    started = time.time()
    for epoch in range(start_epoch, config.epochs):
        epoch_started = time.time()
        print(f"Epoch {epoch + 1}/{config.epochs}")
        try:
            if config.self_critical:
                row = {"epoch": epoch + 1, **trainer.run_self_critical_epoch(features["train"], tokenised_train, cider, epoch)}
            else:
                row = {"epoch": epoch + 1, **trainer.run_epoch(features["train"], *pairs["train"], epoch)}
        except TrainingDiverged as error:
            last = run_dir / LAST_CHECKPOINT
            kept = f"the last good checkpoint, {last}, is untouched" if last.exists() else "no epoch had finished"
            raise TrainingDiverged(f"{error}; {kept}; try a lower --lr and --resume") from None
        row["train_seconds"] = time.time() - epoch_started
        row["captions_per_second"] = row["captions"] / row["train_seconds"]
        row["val_loss"] = trainer.validation_loss(features["val"], *pairs["val"])
        validation_captions = caption_features(captioner, features["val"], config.validation_beam)
        row.update({f"val_{k}": v for k, v in score_captions(validation_captions, splits["val"]).items()})
        row["learning_rate"] = float(trainer.schedule(trainer.optimizer.iterations))
        row["epoch_seconds"] = time.time() - epoch_started
        if best_key not in row:
            raise ValueError(f"best_metric {config.best_metric!r} is not measured here; choose from "
                             f"{', '.join(k[4:] for k in row if k.startswith('val_'))}")
        history.append(row)
        if chief:
            _write_log(run_dir, history)
        with tensorboard.as_default():
            for key, value in row.items():
                tf.summary.scalar(key, value, step=epoch + 1)
        tensorboard.flush()

        improved = row[best_key] > best_score
        if improved:
            best_score, best_epoch = row[best_key], epoch
        stale = epoch - best_epoch  # epochs since the best one
        if config.lr_plateau_patience and stale and stale % config.lr_plateau_patience == 0:
            trainer.lr_scale.assign(trainer.lr_scale * config.lr_plateau_factor)
            print(f"  no better {config.best_metric} for {stale} epoch(s): learning rate x{config.lr_plateau_factor}")
        stop = bool(config.early_stopping_patience and stale >= config.early_stopping_patience)
        state = {"epoch": epoch, "best_score": best_score, "best_epoch": best_epoch,
                 "lr_scale": float(trainer.lr_scale.numpy()), "stopped": stop, "history": history}
        if improved:  # before `last`: a run killed in between redoes this epoch rather than lose its best
            if chief:
                save_checkpoint(run_dir / BEST_CHECKPOINT, trainer.model_variables(), [], state)
                with atomic_path(run_dir / BEST_MODEL) as temporary:
                    captioner.save(temporary)
        if chief:
            save_checkpoint(run_dir / LAST_CHECKPOINT, trainer.model_variables(), trainer.optimizer.variables, state)
        done = epoch + 1 - start_epoch
        remaining = (time.time() - started) / done * (config.epochs - epoch - 1)
        summary = "  ".join(f"{k} {v:.4f}" for k, v in row.items() if k.startswith("val_") and isinstance(v, float))
        print(f"  {summary}{'  (best)' if improved else ''}  ETA {_format_duration(remaining)}")
        if stop:
            print(f"Early stop: no better {config.best_metric} for {stale} epochs (best: epoch {best_epoch + 1})")
            break

    if not chief:  # the chief evaluates and writes the test report
        return run_dir
    if not (run_dir / BEST_CHECKPOINT).exists():
        print("No epoch ran; nothing to evaluate.")
        return run_dir
    load_checkpoint(run_dir / BEST_CHECKPOINT, trainer.model_variables())
    test = splits["test"]
    if not len(test):
        print("No test split: skipping the test evaluation.")
        return run_dir
    test_captions = caption_features(captioner, features["test"], beam_size=1)
    test_scores, results = evaluate_captions(test_captions, test)  # the COCO metrics, as captioner.evaluate
    synthetic = synthetic_scores(test_captions, test)
    test_scores.update(synthetic)
    report = {"split": "test", "images": len(test), "decoding": "greedy", "checkpoint": "best", **test_scores}
    atomic_write_text(run_dir / "test_metrics.json", json.dumps(report, indent=2))
    atomic_write_text(run_dir / "test_captions.json", json.dumps(results, indent=1))
    print(format_table(test_scores, f"Test split ({len(test)} images), greedy, best checkpoint"))
    if synthetic:
        print("  ".join(f"{k} {v:.4f}" for k, v in synthetic.items() if isinstance(v, float)))
    size = captioner.encoder.image_size
    for index in range(min(OVERLAY_EXAMPLES, len(test))):
        caption = test_captions[index]
        print(f"  {test.paths[index] if test.paths else f'test scene {index}'}: {caption.text}")
        draw_overlay(test.image(index, size), caption.words, caption.attention, run_dir / "overlays" / f"test_{index:03d}.png",
                     chosen_cells=caption.chosen_cells)
    if test.scenes is not None:
        _write_example_scenes(test, run_dir / "test_scenes")
    print(f"Model: {run_dir / BEST_MODEL}   overlays: {run_dir / 'overlays'}")
    return run_dir
