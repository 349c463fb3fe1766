"""One pass over the data: a teacher-forced epoch, a self-critical epoch, the dev loss.

Each runs the `Trainer`'s compiled steps batch by batch, shows a `keras.utils.Progbar` and
returns the epoch's row of the metrics log. On a terminal the bar updates in place; in a
file or a pipe (a log of a run) it writes one line per epoch (`captioner.utils.progress`).
"""

from __future__ import annotations

import numpy as np

from captioner.data import pipeline
from captioner.evaluation.cider import CiderD
from captioner.training.trainer import Trainer, TrainingDiverged
from captioner.utils.progress import progress_bar

EXPECTED_CONTEXT_SHARE = 0.5  # hard attention: share of batches trained with the expected context


def check_finite(loss, epoch: int, step: int) -> None:
    """Stop at once on a NaN or infinite loss.

    Keras's TerminateOnNaN would only ask the loop to stop; the step already spoiled the weights in
    memory, so the run must end before anything saves them (the checkpoints on disk are from before).
    """
    if not np.isfinite(float(loss)):
        raise TrainingDiverged(f"the loss became {float(loss)} at epoch {epoch + 1}, step {step + 1}")


def batch_width(config, token_ids: np.ndarray) -> int | None:
    """Random batches all padded to one width (one compiled step); batches of similar length each to its own.

    Almost every random batch holds a longest caption anyway, and each rarer width would cost an XLA compilation
    (15 to 20 s for the demo's step) the first time it came up.
    """
    return None if config.batch_by_length else pipeline.fitting_width(token_ids)


def teacher_forced_epoch(trainer: Trainer, features, image_index, token_ids, epoch: int, target_maps=None,
                         teacher_features=None) -> dict:
    """Every (image, caption) pair once, in the seeded batches of `pipeline.epoch_batches`.

    target_maps (P, max_length + 1, L), aligned with the pairs: attention supervision (the step then
    also minimises `supervision_weight` times the supervision loss, logged as `train_supervision`).
    teacher_features, aligned with `features`: the teacher's (`trainer.teacher`) for distillation.
    Hard attention: with the paper's estimator half the batches (the paper's choice) use the expected context and
    the rest sample; with the others every batch does both (`objectives.per_word_hard_attention_loss`).
    """
    config = trainer.config
    batches = pipeline.epoch_batches(token_ids, config.batch_size, config.seed, epoch, by_length=config.batch_by_length)
    sampled = np.random.default_rng([config.seed, epoch, 1]).random(len(batches)) >= EXPECTED_CONTEXT_SHARE
    if config.hard_estimator != "paper":  # every batch reads both the drawn cells and the expected context
        sampled[:] = True
    sampled &= trainer.decoder.hard_attention
    supervised = target_maps is not None
    progress = progress_bar(len(batches), ["loss", "xent", "attn", "sup", "reward", "baseline"])
    totals, gradient_norms, hard = np.zeros(4), [], []
    captions = 0
    if trainer.distributed:  # this process reads only its replicas' rows of each global batch
        dataset = pipeline.make_replica_dataset(features, image_index, token_ids, batches,
                                                trainer.strategy.num_replicas_in_sync, trainer.local_replicas, target_maps)
    else:
        dataset = pipeline.make_dataset(features, image_index, token_ids, batches, target_maps, teacher_features,
                                        batch_width(config, token_ids))
    for step, batch in enumerate(dataset):
        if sampled[step]:
            loss, cross_entropy, penalty, gradient_norm, reward, baseline, entropy, *supervision = \
                trainer.hard_train_step(*batch)
            hard.append([float(reward), float(baseline), float(entropy)])
        else:  # with target maps, the step also returns the supervision loss
            features_and_ids, extra = batch[:2], list(batch[2:])
            teacher = extra.pop() if teacher_features is not None else None
            loss, cross_entropy, penalty, gradient_norm, *supervision = trainer.train_step(
                *features_and_ids, *extra, teacher_features=teacher)
        check_finite(loss, epoch, step)
        totals += [float(loss), float(cross_entropy), float(penalty), float(supervision[0]) if supervision else 0.0]
        gradient_norms.append(float(gradient_norm))
        captions += len(batches[step])
        mean = totals / (step + 1)
        shown = [("loss", mean[0]), ("xent", mean[1]), ("attn", mean[2])]
        if supervised:
            shown.append(("sup", mean[3]))
        if hard:
            shown += [("reward", hard[-1][0]), ("baseline", hard[-1][1])]
        progress.update(step + 1, shown)
    row = {"train_loss": totals[0] / len(batches), "train_cross_entropy": totals[1] / len(batches),
           "captions": captions, "gradient_norm": float(np.mean(gradient_norms))}
    if supervised:
        row["train_supervision"] = totals[3] / len(batches)  # the attention supervision loss, before its weight
    if hard:
        first, last = np.mean(hard[: max(1, len(hard) // 4)], axis=0), np.mean(hard[-max(1, len(hard) // 4):], axis=0)
        row.update({"hard_batches": len(hard), "reward": float(np.mean([h[0] for h in hard])),
                    "reward_first_quarter": float(first[0]), "reward_last_quarter": float(last[0]),
                    "baseline": float(np.mean([h[1] for h in hard])), "attention_entropy": float(np.mean([h[2] for h in hard]))})
    return row


def self_critical_epoch(trainer: Trainer, features, references: list[list[str]], cider: CiderD, epoch: int) -> dict:
    """One pass over the training images, rewarding sampled captions by how much their CIDEr-D beats a baseline.

    The baseline: the greedy caption's CIDEr-D (Rennie et al. 2017), or with `scst_samples` K > 1,
    K samples per image each measured against the mean of the other K - 1 (Luo 2020): half the
    samples then beat their baseline, where a model that already knows its training captions
    leaves almost every sample below its greedy caption.
    """
    config, captioner = trainer.config, trainer.captioner
    vocabulary = captioner.vocabulary
    samples = config.scst_samples
    order = np.random.default_rng([config.seed, epoch, 2]).permutation(len(features))
    batches = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
    progress = progress_bar(len(batches), ["sample", "baseline"])
    sample_scores, baseline_scores, gradient_norms = [], [], []
    for step, batch in enumerate(batches):
        batch = np.sort(batch)  # sorted reads from the memory-mapped cache
        batch_features = np.asarray(features[batch], dtype=np.float32)
        batch_references = [references[i] for i in batch]
        if samples > 1:
            batch_features = np.repeat(batch_features, samples, axis=0)  # K rows per image
            batch_references = [refs for refs in batch_references for _ in range(samples)]
        sampled_ids = captioner.sample_features(batch_features, seed=(config.seed, epoch * 100_003 + step))
        sample_reward = cider.scores([vocabulary.decode(ids) for ids in sampled_ids], batch_references)
        if samples > 1:
            per_image = sample_reward.reshape(-1, samples)
            baseline = ((per_image.sum(axis=1, keepdims=True) - per_image) / (samples - 1)).ravel()
        else:
            greedy = captioner.decode_features(batch_features, length_penalty=0.0, no_repeat_ngram=0)  # plain greedy
            baseline = cider.scores([c.words for c in greedy], batch_references)
        token_ids = sample_token_ids(sampled_ids, vocabulary.start_id, vocabulary.end_id)
        loss, gradient_norm = trainer.self_critical_step(batch_features, token_ids, sample_reward, baseline)
        check_finite(loss, epoch, step)
        sample_scores.extend(sample_reward)
        baseline_scores.extend(baseline)
        gradient_norms.append(float(gradient_norm))
        progress.update(step + 1, [("sample", float(np.mean(sample_scores))), ("baseline", float(np.mean(baseline_scores)))])
    return {"captions": len(sample_scores), "sample_cider": float(np.mean(sample_scores)),
            "baseline_cider": float(np.mean(baseline_scores)),
            "reward": float(np.mean(np.subtract(sample_scores, baseline_scores))),
            "gradient_norm": float(np.mean(gradient_norms))}


def sample_token_ids(sampled_ids: np.ndarray, start_id: int, end_id: int) -> np.ndarray:
    """`<start>` + each sample up to its first `<end>` (kept), then padding: (B, T) with T the batch's
    longest, rounded up to a multiple of LENGTH_STEP. sampled_ids (B, max_length + 1) always hold an `<end>`.
    """
    lengths = np.argmax(sampled_ids == end_id, axis=1) + 1  # words and the `<end>`
    token_ids = np.zeros((len(sampled_ids), 1 + sampled_ids.shape[1]), np.int32)
    token_ids[:, 0] = start_id
    keep = np.arange(sampled_ids.shape[1])[None, :] < lengths[:, None]
    token_ids[:, 1:] = np.where(keep, sampled_ids, 0)
    return token_ids[:, : min(pipeline.padded_length(int(lengths.max()) + 1), token_ids.shape[1])]


def validation_loss(trainer: Trainer, features, image_index, token_ids) -> float:
    """The dev cross-entropy objective (teacher forced, no dropout, no update), averaged over captions."""
    batches = pipeline.sequential_batches(len(image_index), trainer.config.batch_size)
    width = batch_width(trainer.config, token_ids)
    losses, sizes = [], []
    for batch_features, batch_ids in pipeline.make_dataset(features, image_index, token_ids, batches, width=width):
        losses.append(float(trainer.eval_step(batch_features, batch_ids)[0]))
        sizes.append(int(batch_ids.shape[0]))
    return float(np.average(losses, weights=sizes))
