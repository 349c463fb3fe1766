"""The `Trainer`: the decoder's optimizer and its compiled training steps, one per objective.

Each step is one graph: the decoder unrolled over the batch's caption length, the objective
(`captioner.training.objectives`), the gradients and the optimizer update. Hand-written rather
than `model.fit` because the speed comes from one graph per caption length: batches are padded
only to their own longest caption (rounded up to `pipeline.LENGTH_STEP`), 405 captions/s against
261 with every caption padded to the longest (bench/RESULTS.md, "Each speed change"), and the
unrolled per-length graph is what XLA can compile; `fit` has one train function for all shapes,
and its loop has no place for hard attention's mixed batches or self-critical sampling.

The steps:
    train_step              cross-entropy + attention penalty (every run)
    train_step(..., maps)   the same + attention supervision (`--attention-supervision`)
    train_step(..., teacher_features=...)   the word loss shares its target with a teacher's
                            next-word distributions (`--distill-from`; with or without maps)
    hard_train_step         + REINFORCE on one sampled location per word (`--attention hard`)
    self_critical_step      REINFORCE on whole sampled captions (`--scst`)
    eval_step               the dev loss (no update)

With a fine-tuned encoder (`--fine-tune-encoder N`) every step takes the cached activations below
the encoder's last N blocks, runs those blocks inside the tape and updates them with their own
optimizer at `encoder_learning_rate` (a pretrained CNN needs smaller steps than a new decoder).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from captioner.config import Config
from captioner.model.captioner import Captioner
from captioner.training import distribute, objectives, reinforce
from captioner.utils.graph import compile_function


class TrainingDiverged(RuntimeError):
    """The loss stopped being a finite number."""


class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A base schedule times a scale that validation can lower (reduce-on-plateau)."""

    def __init__(self, base, scale: tf.Variable):
        self.base, self.scale = base, scale

    def __call__(self, step):
        base = self.base(step) if callable(self.base) else self.base
        return tf.cast(base, tf.float32) * self.scale

    def get_config(self):
        return {}


def learning_rate_schedule(config: Config, total_steps: int, scale: tf.Variable, peak: float | None = None):
    """Constant, or cosine decay to 1% over the whole run (smaller steps once the model is close); times `scale`.
    peak: the rate it starts from (default: the decoder's `learning_rate`)."""
    peak = config.learning_rate if peak is None else peak
    if config.lr_schedule == "constant":
        base = peak
    elif config.lr_schedule == "cosine":
        base = keras.optimizers.schedules.CosineDecay(peak, decay_steps=max(total_steps, 1), alpha=0.01)
    else:
        raise ValueError(f"unknown lr_schedule {config.lr_schedule!r}; use constant or cosine")
    return ScaledSchedule(base, scale)


class Trainer:
    """Holds the model, optimizer and compiled steps; `captioner.training.epochs` runs them over the data.

    `strategy` (tf.distribute): the captioner must have been built under its scope. Each
    training step then runs on every replica with its slice of the global batch
    (`captioner.training.distribute`).
    """

    def __init__(self, captioner: Captioner, config: Config, total_steps: int = 1, strategy=None,
                 teacher: Captioner | None = None):
        """teacher: a trained captioner whose next-word distributions the decoder also learns (`--distill-from`);
        it is never updated and never saved with the model."""
        self.captioner = captioner
        self.teacher = teacher
        self.config = config
        self.decoder = captioner.decoder
        self.strategy = strategy or tf.distribute.get_strategy()
        self.distributed = distribute.is_distributed(self.strategy)
        if self.distributed and (config.hard_attention or config.self_critical or teacher is not None):
            raise ValueError("hard attention, self-critical training and distillation run on one device only "
                             "(--strategy default)")
        with self.strategy.scope():
            self.lr_scale = tf.Variable(1.0, trainable=False, name="lr_scale")
            self.schedule = learning_rate_schedule(config, total_steps, self.lr_scale)
            self.optimizer = keras.optimizers.Adam(learning_rate=self.schedule)
            self.optimizer.build(self.decoder.trainable_variables)
            self.encoder_variables = captioner.encoder.fine_tuned_variables  # empty unless fine-tuning
            self.encoder_optimizer = None
            if self.encoder_variables:
                encoder_schedule = learning_rate_schedule(config, total_steps, self.lr_scale,
                                                          config.encoder_learning_rate)
                self.encoder_optimizer = keras.optimizers.Adam(learning_rate=encoder_schedule)
                self.encoder_optimizer.build(self.encoder_variables)
            # Hard attention's moving-average reward baseline; saved with the weights.
            self.reward_baseline = keras.Variable(0.0, trainable=False, name="reward_baseline")
            self.baseline_started = keras.Variable(False, trainable=False, dtype="bool", name="baseline_started")
        self._compiled = {}  # (step, caption length) -> tf.function; the decoder unrolls over the length
        if self.distributed:
            self.local_replicas = distribute.local_replica_ids(self.strategy)

    def _compiled_step(self, step, token_length: int, extra=()):
        """`step` compiled for captions of `token_length` ids; `extra`: specs of its further inputs."""
        key = (step.__name__, token_length)
        if key not in self._compiled:
            locations, size = self.captioner.encoder.cached_shape  # the features, or what is below the fine-tuned blocks
            signature = [tf.TensorSpec([None, locations, size], tf.float32), tf.TensorSpec([None, token_length], tf.int32),
                         *extra]
            self._compiled[key] = compile_function(step, signature, jit_compile=self.config.jit_compile)
        return self._compiled[key]

    def _target_maps_spec(self, token_length: int) -> tf.TensorSpec:
        """(B, T, L) attention targets: one map per attention step (token_length - 1 of them)."""
        return tf.TensorSpec([None, token_length - 1, self.captioner.feature_shape[0]], tf.float32)

    def _teacher_features_spec(self) -> tf.TensorSpec:
        """(B, L', D'): what the teacher's encoder cached for each image (its own grid and features)."""
        return tf.TensorSpec([None, *self.teacher.encoder.cached_shape], tf.float32)

    def train_step(self, features, token_ids, target_maps=None, teacher_features=None):
        """One optimizer step on a batch; returns loss, cross-entropy, attention penalty, gradient norm
        and, with `target_maps` (attention supervision), the supervision loss.

        Without target maps or a teacher the step is the plain one: no extra input, the same graph as ever.
        teacher_features: the teacher's cached features of the batch's images (distillation).
        Distributed: features, token_ids (and target_maps) are tuples of this process's replica slices.
        """
        inputs = (features, token_ids) if target_maps is None else (features, token_ids, target_maps)
        if self.distributed:
            return self._distributed_train_step(*inputs)
        length = token_ids.shape[1]
        if teacher_features is not None:
            if target_maps is None:
                return self._compiled_step(self._distilled_train_step, length, [self._teacher_features_spec()])(
                    *inputs, teacher_features)
            return self._compiled_step(self._supervised_distilled_train_step, length,
                                       [self._target_maps_spec(length), self._teacher_features_spec()])(
                *inputs, teacher_features)
        if target_maps is None:
            return self._compiled_step(self._train_step, length)(*inputs)
        return self._compiled_step(self._supervised_train_step, length, [self._target_maps_spec(length)])(*inputs)

    def _distributed_train_step(self, *input_parts):
        """The train step on every replica; the replicas' losses add up (each is a share of the global mean)."""
        token_parts = input_parts[1]
        step = self._train_step if len(input_parts) == 2 else self._supervised_train_step
        # One graph per shape of this process's slices, so a shape seen before never retraces.
        key = ("distributed_" + step.__name__, int(token_parts[0].shape[1]), *(int(part.shape[0]) for part in token_parts))
        if key not in self._compiled:
            # Losses are shares of the global mean: summed. The gradient norm is the same everywhere: averaged.
            reductions = [tf.distribute.ReduceOp.SUM] * 3 + [tf.distribute.ReduceOp.MEAN] + [tf.distribute.ReduceOp.SUM]

            def distributed_step(*inputs):
                results = self.strategy.run(step, args=inputs)
                return [self.strategy.reduce(op, value, axis=None) for op, value in zip(reductions, results)]

            self._compiled[key] = compile_function(distributed_step, None)  # per-replica values take no input signature
        part = {replica: index for index, replica in enumerate(self.local_replicas)}
        inputs = [self.strategy.experimental_distribute_values_from_function(
            lambda context, parts=parts: parts[part[context.replica_id_in_sync_group]]) for parts in input_parts]
        return self._compiled[key](*inputs)

    def eval_step(self, features, token_ids):
        return self._compiled_step(self._eval_step, token_ids.shape[1])(features, token_ids)

    def hard_train_step(self, features, token_ids, target_maps=None):
        """One hard-attention step: loss, cross-entropy, penalty, gradient norm, reward, baseline, entropy and, with
        `target_maps` (attention supervision), the supervision loss."""
        length = token_ids.shape[1]
        if target_maps is None:
            return self._compiled_step(self._hard_train_step, length)(features, token_ids)
        return self._compiled_step(self._supervised_hard_train_step, length, [self._target_maps_spec(length)])(
            features, token_ids, target_maps)

    def self_critical_step(self, features, token_ids, rewards, baselines):
        """REINFORCE on whole sampled captions: token_ids (B, T) are `<start>` + a sample + `<end>`."""
        per_caption = tf.TensorSpec([None], tf.float32)
        return self._compiled_step(self._self_critical_step, token_ids.shape[1], (per_caption, per_caption))(
            features, token_ids, rewards, baselines)

    def _train_step(self, features, token_ids):
        return self._teacher_forced_step(features, token_ids)

    def _supervised_train_step(self, features, token_ids, target_maps):
        return self._teacher_forced_step(features, token_ids, target_maps)

    def _distilled_train_step(self, features, token_ids, teacher_features):
        return self._teacher_forced_step(features, token_ids, teacher_features=teacher_features)

    def _supervised_distilled_train_step(self, features, token_ids, target_maps, teacher_features):
        return self._teacher_forced_step(features, token_ids, target_maps, teacher_features)

    def _teacher_forced_step(self, features, token_ids, target_maps=None, teacher_features=None):
        """Cross-entropy + penalty on the caption's words; with `target_maps`, plus `supervision_weight` times the
        attention supervision loss (Liu et al. 2017: the cross-entropy to the boxes' map, or with
        `supervision_loss="mass"` -log of the attention inside them); with `teacher_features`, the word loss
        shared with the teacher's distributions over the same next words (the teacher without dropout)."""
        inputs, targets = token_ids[:, :-1], token_ids[:, 1:]  # predict each next word
        teacher_logits = None
        if teacher_features is not None:
            teacher_logits, _ = self.teacher.decoder(self.teacher.encoder.encode_above(teacher_features), inputs,
                                                     training=False)
        with tf.GradientTape() as tape:
            logits, attention_weights = self.decoder(self.encode(features), inputs, training=True)
            loss, cross_entropy, penalty = objectives.caption_loss(
                logits, targets, attention_weights, self.config.attention_lambda, self.config.label_smoothing,
                teacher_logits, self.config.distill_weight)
            if target_maps is not None:
                supervision = objectives.SUPERVISION_LOSSES[self.config.supervision_loss](attention_weights, target_maps)
                loss += self.config.supervision_weight * supervision
        if target_maps is None:
            return loss, cross_entropy, penalty, self._apply_gradients(tape, loss)
        return loss, cross_entropy, penalty, self._apply_gradients(tape, loss), supervision

    def _hard_train_step(self, features, token_ids):
        return self._hard_step(features, token_ids)

    def _supervised_hard_train_step(self, features, token_ids, target_maps):
        return self._hard_step(features, token_ids, target_maps)

    def _hard_step(self, features, token_ids, target_maps=None):
        """Hard attention: the words read from drawn cells, REINFORCE for the draws (`config.hard_estimator`);
        with `target_maps`, plus `supervision_weight` times the attention supervision loss on alpha."""
        config = self.config
        inputs, targets = token_ids[:, :-1], token_ids[:, 1:]
        with tf.GradientTape() as tape:
            if config.hard_estimator == "paper":
                logits, attention_weights, chosen = self.decoder.sample_locations(self.encode(features), inputs,
                                                                                  training=True)
                word_loss, cross_entropy, penalty = objectives.caption_loss(
                    logits, targets, attention_weights, config.attention_lambda, config.label_smoothing)
                loss, log_likelihood, entropy = objectives.hard_attention_loss(
                    word_loss, logits, targets, attention_weights, chosen, self.reward_baseline, config.reward_scale,
                    config.entropy_bonus)
                reward, entropy = tf.reduce_mean(log_likelihood), tf.reduce_mean(entropy)
            else:
                choice = "top" if config.hard_estimator == "top-k" else "sample"
                expected_logits, cell_logits, attention_weights, chosen = self.decoder.read_cells(
                    self.encode(features), inputs, config.hard_cells, choice, training=True)
                cover = None
                if target_maps is not None:  # the covered share of each cell: the target map over its largest value
                    cover = tf.math.divide_no_nan(target_maps, tf.reduce_max(target_maps, axis=-1, keepdims=True))
                loss, cross_entropy, penalty, reward, baseline, entropy = objectives.per_word_hard_attention_loss(
                    expected_logits, cell_logits, targets, attention_weights, chosen, config.hard_estimator,
                    config.attention_lambda, config.label_smoothing, config.reward_scale, config.entropy_bonus,
                    cover, config.box_reward)
            if target_maps is not None:
                supervision = objectives.SUPERVISION_LOSSES[config.supervision_loss](attention_weights, target_maps)
                loss += config.supervision_weight * supervision
        gradient_norm = self._apply_gradients(tape, loss)
        if config.hard_estimator == "paper":
            self.reward_baseline.assign(reinforce.moving_average_baseline(self.reward_baseline, log_likelihood,
                                                                          self.baseline_started))
            self.baseline_started.assign(True)
            baseline = self.reward_baseline.value
        results = [loss, cross_entropy, penalty, gradient_norm, reward, baseline, entropy]
        return results if target_maps is None else [*results, supervision]

    def _self_critical_step(self, features, token_ids, rewards, baselines):
        """No dropout: the gradient is of the same policy that drew the samples."""
        inputs, targets = token_ids[:, :-1], token_ids[:, 1:]
        with tf.GradientTape() as tape:
            logits, _ = self.decoder(self.encode(features), inputs, training=False)
            loss = objectives.self_critical_loss(logits, targets, rewards, baselines)
        return loss, self._apply_gradients(tape, loss)

    def _eval_step(self, features, token_ids):
        inputs, targets = token_ids[:, :-1], token_ids[:, 1:]
        logits, attention_weights = self.decoder(self.encode(features), inputs, training=False)
        return objectives.caption_loss(logits, targets, attention_weights, self.config.attention_lambda)

    def encode(self, cached):
        """Cached activations -> the decoder's features: the fine-tuned blocks, or nothing for a frozen encoder."""
        return self.captioner.encoder.encode_above(cached)

    def _apply_gradients(self, tape, loss):
        """One clipped optimizer step on the decoder (and the fine-tuned blocks); returns the gradient norm
        before clipping (over both: one clipping for the whole model, as if one optimizer).

        Distributed, the norm is that of the gradient summed over replicas, as on one device. Keras's
        optimizer sums the gradients it is given over the replicas once more, so each replica hands it
        an equal share of the clipped sum.
        """
        variables = [*self.decoder.trainable_variables, *self.encoder_variables]
        # Dense: the embedding's sparse gradient repeats a row per occurrence of a word, and clipping
        # would measure those copies' norm rather than the gradient's.
        gradients = [tf.convert_to_tensor(gradient) for gradient in tape.gradient(loss, variables)]
        replicas = self.strategy.num_replicas_in_sync
        if replicas > 1:
            gradients = distribute.global_sum(gradients)
        gradients, gradient_norm = tf.clip_by_global_norm(gradients, self.config.clip_norm)
        if replicas > 1:
            gradients = [gradient / replicas for gradient in gradients]
        decoder_count = len(variables) - len(self.encoder_variables)
        self.optimizer.apply_gradients(zip(gradients[:decoder_count], variables[:decoder_count]))
        if self.encoder_optimizer is not None:
            self.encoder_optimizer.apply_gradients(zip(gradients[decoder_count:], variables[decoder_count:]))
        return gradient_norm

    def model_variables(self):
        """Weights and the random seed states, so a resumed run draws the same dropout masks (and locations);
        with a fine-tuned encoder, its trained blocks too (BatchNorm statistics never move)."""
        variables = [*self.decoder.variables, *self.encoder_variables]
        if self.decoder.hard_attention:
            return [*variables, self.reward_baseline, self.baseline_started]
        return variables

    def optimizer_variables(self):
        """Every optimizer's state (the decoder's, then the fine-tuned encoder's), for exact resume."""
        extra = self.encoder_optimizer.variables if self.encoder_optimizer is not None else []
        return [*self.optimizer.variables, *extra]
