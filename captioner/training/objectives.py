"""The training objectives, one function each: what every kind of training step minimises.

* `caption_loss`: teacher-forced cross-entropy over the real words, label smoothing, and the
  doubly stochastic attention penalty (Xu et al. 2015, eq. 14). Every step uses it.
* `attention_supervision_loss`: cross-entropy between alpha and a target map of the grid cells
  for the words that name a boxed region (Liu et al., "Attention Correctness in Neural Image
  Captioning", AAAI 2017); `--attention-supervision`. `attention_mass_loss`: -log of the attention
  inside the boxes, Liu et al.'s "attention correctness" itself; `--supervision-loss mass`. `attention_pointing_loss`:
  the same on alpha sharpened, so its peak lands inside; `--supervision-loss pointing`.
* `distillation_loss`: cross-entropy from a teacher's next-word distributions (Hinton et al. 2015, word-level
  knowledge distillation); `--distill-from`. `caption_loss` mixes it with the caption's own words.
* `hard_attention_loss`: REINFORCE for the sampled locations of hard attention (Xu et al. 2015,
  section 4.1); `--attention hard`. `per_word_hard_attention_loss`: the same with a reward per word
  and a baseline per word (`--hard-estimator expected-baseline | leave-one-out`), or the exact sum
  over the top cells (`top-k`).
* `self_critical_loss`: REINFORCE on whole sampled captions rewarded by CIDEr-D (Rennie et al.
  2017); `--scst`.

Each is a pure function of the decoder's outputs, so a test can check it on small tensors.
Under tf.distribute the means are over the whole global batch (`distribute.global_sum`): the
replicas' losses add up to the single-device loss.
"""

from __future__ import annotations

import tensorflow as tf

from captioner.training import distribute, reinforce

SUPERVISION_EPSILON = 1e-8  # keeps log(alpha) finite where the softmax underflows to 0


def caption_loss(logits, targets, attention_weights, attention_lambda: float, label_smoothing: float = 0.0,
                 teacher_logits=None, distill_weight: float = 0.0):
    """Cross-entropy over real words only, plus the doubly stochastic attention penalty.

    logits (B, T, V), targets (B, T) with 0 for padding, attention_weights (B, T, L).
    The penalty (paper, eq. 14) pushes every location to receive about as much
    attention in total, over the caption, as any other: (1 - sum_t alpha_ti)^2,
    here averaged over locations so that lambda does not depend on the grid size.
    Label smoothing moves `label_smoothing` of each target's probability mass to a
    uniform distribution over the vocabulary; the cross-entropy returned (for the
    logs and the dev loss) is always the plain one, so runs stay comparable.
    teacher_logits (B, T, V): a teacher's next-word scores for the same words; the word loss is then
    (1 - distill_weight) x the caption's own + distill_weight x `distillation_loss`.
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
    if teacher_logits is not None:
        distilled = distillation_loss(log_probabilities, teacher_logits, mask, words)
        objective = (1.0 - distill_weight) * objective + distill_weight * distilled
    attention_per_location = tf.reduce_sum(attention_weights * mask[..., None], axis=1)  # (B, L)
    penalty = tf.reduce_sum(tf.reduce_mean(tf.square(1.0 - attention_per_location), axis=1) * real) / captions
    return objective + attention_lambda * penalty, cross_entropy, penalty


def distillation_loss(log_probabilities, teacher_logits, mask, words):
    """Mean over real words of -sum_v p_teacher(v) log p_student(v): the student learns the teacher's whole
    distribution over the next word, not only the one word the caption happens to use.

    log_probabilities (B, T, V) the student's; teacher_logits (B, T, V) the teacher's scores (an ensemble's
    log-probabilities are scores too: log_softmax leaves them as they are); mask (B, T); words: the count to
    divide by. Its minimum over the student is the teacher's entropy, reached where the two agree.
    """
    teacher = tf.stop_gradient(tf.nn.softmax(tf.cast(teacher_logits, tf.float32)))
    per_word = -tf.reduce_sum(teacher * log_probabilities, axis=-1)  # (B, T)
    return tf.reduce_sum(per_word * mask) / words


def attention_supervision_loss(attention_weights, target_maps):
    """Mean over the supervised words of -sum_i target_i log(alpha_i): how far alpha is from where the word is.

    attention_weights (B, T, L) alpha of each attention step; target_maps (B, T, L): for a word
    inside a phrase with boxes, the boxes' distribution over the grid cells (sums to 1); all zeros
    for every other word, which the loss ignores. Its minimum over alpha is alpha = target (the
    cross-entropy is then the target's entropy), so the gradient pulls attention onto the boxes.
    """
    attention_weights, target_maps = tf.cast(attention_weights, tf.float32), tf.cast(target_maps, tf.float32)
    per_word = -tf.reduce_sum(target_maps * tf.math.log(attention_weights + SUPERVISION_EPSILON), axis=-1)  # (B, T)
    return _mean_over_supervised_words(per_word, target_maps)


def attention_mass_loss(attention_weights, target_maps):
    """Mean over the supervised words of -log(sum_i covered_i alpha_i): the attention outside the boxes, in nats.

    Same inputs as `attention_supervision_loss`. The covered share of each cell is the target map over its
    largest value (the target is the covered share normalised to sum 1, `captioner.data.entities`), so the sum
    is the grounding measure's head mass. Unlike the cross-entropy, whose minimum spreads alpha over the whole
    box in proportion to the cover, any map inside the boxes scores 0: attention may settle on the part of
    the thing that tells most about the word (a face, a ball), and the loss asks only that it stays on it.
    """
    attention_weights, target_maps = tf.cast(attention_weights, tf.float32), tf.cast(target_maps, tf.float32)
    covered = tf.math.divide_no_nan(target_maps, tf.reduce_max(target_maps, axis=-1, keepdims=True))  # (B, T, L) in [0, 1]
    inside = tf.reduce_sum(attention_weights * covered, axis=-1)  # (B, T)
    return _mean_over_supervised_words(-tf.math.log(inside + SUPERVISION_EPSILON), target_maps)


# How much `attention_pointing_loss` sharpens alpha before taking its mass: alpha^4, renormalised. At 1 it is
# the mass loss; as it grows the loss becomes -log [the top cell lies in the boxes], the pointing game itself.
POINTING_SHARPNESS = 4.0


def attention_pointing_loss(attention_weights, target_maps, sharpness: float = POINTING_SHARPNESS):
    """The mass loss on alpha sharpened to alpha^sharpness / sum(alpha^sharpness): attention's peak inside the boxes.

    The mass loss is content with 70 % of alpha inside the boxes and the largest cell outside them; what a hard
    model draws at inference, and what the pointing game scores, is that largest cell. Sharpening first gives
    the cells near the top most of the gradient, so the loss pulls the peak in rather than the spread.
    """
    attention_weights = tf.cast(attention_weights, tf.float32)
    sharpened = tf.nn.softmax(sharpness * tf.math.log(attention_weights + SUPERVISION_EPSILON), axis=-1)
    return attention_mass_loss(sharpened, target_maps)


def _mean_over_supervised_words(per_word, target_maps):
    """The mean of per_word (B, T) over the words whose target map is not all zeros (of the global batch)."""
    supervised = tf.cast(tf.reduce_sum(target_maps, axis=-1) > 0, tf.float32)  # (B, T)
    words = tf.maximum(distribute.global_sum(tf.reduce_sum(supervised)), 1.0)
    return tf.reduce_sum(per_word * supervised) / words


SUPERVISION_LOSSES = {"cross-entropy": attention_supervision_loss, "mass": attention_mass_loss,
                      "pointing": attention_pointing_loss}


def target_log_probabilities(log_probabilities, targets):
    """log p of each target word: log_probabilities (B, T, V), targets (B, T) -> (B, T)."""
    return tf.gather(log_probabilities, targets, axis=-1, batch_dims=2)


def per_caption_mean(values, mask):
    """Mean over each caption's real words: values and mask (B, T) -> (B,)."""
    return tf.reduce_sum(values * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)


def hard_attention_loss(word_loss, logits, targets, attention_weights, chosen, baseline, reward_scale: float,
                        entropy_bonus: float):
    """The paper's hard-attention objective (section 4.1), one location sampled per word: `word_loss` plus REINFORCE.

    `word_loss` (from `caption_loss`, given the sampled locations) trains the decoder as usual. REINFORCE
    trains the location policy with the caption's log-likelihood (per word, so long captions do not get
    larger rewards) as the reward, minus a moving-average `baseline`, times `reward_scale`; an entropy
    bonus keeps the attention from settling on one place too soon. chosen (B, T): the sampled cells.
    Returns (loss to minimise, rewards (B,), attention entropy (B,)).
    """
    mask = tf.cast(targets != 0, tf.float32)
    log_likelihood = per_caption_mean(target_log_probabilities(tf.nn.log_softmax(logits), targets), mask)
    chosen_weight = tf.gather(attention_weights, chosen, axis=2, batch_dims=2)  # alpha of the sampled cell
    log_policy = per_caption_mean(tf.math.log(chosen_weight + reinforce.EPSILON), mask)
    entropy = per_caption_mean(reinforce.entropy(attention_weights), mask)
    policy_loss = reinforce.policy_gradient_loss(log_policy, log_likelihood, baseline)
    return word_loss + reward_scale * policy_loss - entropy_bonus * tf.reduce_mean(entropy), log_likelihood, entropy


HARD_ESTIMATORS = ("paper", "expected-baseline", "leave-one-out", "top-k")


def per_word_hard_attention_loss(expected_logits, cell_logits, targets, attention_weights, chosen, estimator: str,
                                 attention_lambda: float, label_smoothing: float, reward_scale: float,
                                 entropy_bonus: float, cell_cover=None, box_reward: float = 0.0):
    """Hard attention trained word by word, the expected context's state carried forward (`DecoderWithAttention.read_cells`).

    expected_logits (B, T, V): each word read from the expected context; cell_logits (B, T, K, V): read from each
    of K cells, chosen (B, T, K), drawn from alpha (B, T, L) or its top K; targets (B, T), 0 for padding.

    The word loss is the mean of the cells' cross-entropy and the expected reading's (the paper mixes the two
    readings half and half over batches; here every batch does both). The location policy:
      * expected-baseline: REINFORCE with reward log p(word | cell) and baseline log p(word | expected context);
      * leave-one-out: the same with the mean of the other K - 1 cells' log p as each cell's baseline;
      * top-k: no sampling; -log sum_k (alpha_k / sum alpha_top) p(word | cell k), differentiated exactly.
    Neither baseline depends on the cell it is the baseline of, so the estimate stays unbiased.
    cell_cover (B, T, L): the share of each cell covered by the word's boxes (0 where no box): a drawn cell
    earns box_reward times its cover on top. An entropy bonus keeps alpha from settling too soon.
    Returns (loss, cross-entropy of the cells, penalty, mean reward, mean baseline, mean entropy).
    """
    cells = cell_logits.shape[2]
    expected_logits, cell_logits = tf.cast(expected_logits, tf.float32), tf.cast(cell_logits, tf.float32)
    attention_weights = tf.cast(attention_weights, tf.float32)
    mask = tf.cast(targets != 0, tf.float32)  # (B, T)
    words = tf.maximum(distribute.global_sum(tf.reduce_sum(mask)), 1.0)

    # The word loss: every cell's reading as its own caption, beside the expected one.
    per_cell = lambda tensor: tf.reshape(tf.transpose(tensor, [0, 2, 1, 3]), [-1, tensor.shape[1], tensor.shape[3]])
    cell_loss, cell_cross_entropy, penalty = caption_loss(
        per_cell(cell_logits), tf.repeat(targets, cells, axis=0), tf.repeat(attention_weights, cells, axis=0),
        attention_lambda, label_smoothing)
    expected_loss, _, _ = caption_loss(expected_logits, targets, attention_weights, attention_lambda, label_smoothing)

    # log p(word | cell k), (B, T, K): each of a word's K readings scored on the same target word
    cell_log_likelihood = tf.gather(tf.nn.log_softmax(cell_logits), targets[:, :, None], axis=-1, batch_dims=2)[..., 0]
    expected_log_likelihood = target_log_probabilities(tf.nn.log_softmax(expected_logits), targets)  # (B, T)
    chosen_weight = tf.gather(attention_weights, chosen, axis=2, batch_dims=2)  # (B, T, K) alpha of each cell
    log_policy = tf.math.log(chosen_weight + reinforce.EPSILON)
    entropy = reinforce.entropy(attention_weights)  # (B, T)
    if estimator == "top-k":
        kept = chosen_weight / tf.reduce_sum(chosen_weight, axis=-1, keepdims=True)
        marginal = tf.reduce_logsumexp(tf.math.log(kept + reinforce.EPSILON) + cell_log_likelihood, axis=-1)
        rewards, baselines = cell_log_likelihood, expected_log_likelihood[..., None] + tf.zeros_like(cell_log_likelihood)
        # The marginal trains the cells' readings and alpha at once: no REINFORCE, so no reward scale.
        loss = 0.5 * (expected_loss - tf.reduce_sum(marginal * mask) / words)
    else:
        rewards, baselines = cell_log_likelihood, expected_log_likelihood[..., None]
        if cell_cover is not None and box_reward:
            cell_cover = tf.cast(cell_cover, tf.float32)
            rewards += box_reward * tf.gather(cell_cover, chosen, axis=2, batch_dims=2)
            # The cover a drawn cell earns on average, sum_i alpha_i cover_i: a baseline for that part.
            baselines += box_reward * tf.reduce_sum(attention_weights * cell_cover, axis=-1)[..., None]
        if estimator == "expected-baseline":
            baselines += tf.zeros_like(rewards)  # one per cell
        elif estimator == "leave-one-out":
            if cells < 2:
                raise ValueError("the leave-one-out baseline needs 2 or more cells a word (hard_cells)")
            baselines = (tf.reduce_sum(rewards, axis=-1, keepdims=True) - rewards) / (cells - 1)
        else:
            raise ValueError(f"unknown hard estimator {estimator!r}; use one of {', '.join(HARD_ESTIMATORS[1:])}")
        advantage = tf.stop_gradient(rewards - baselines)  # (B, T, K)
        policy_loss = -tf.reduce_sum(tf.reduce_mean(advantage * log_policy, axis=-1) * mask) / words
        loss = 0.5 * (cell_loss + expected_loss) + reward_scale * policy_loss
    loss -= entropy_bonus * tf.reduce_sum(entropy * mask) / words
    mean_over_words = lambda values: tf.reduce_sum(tf.reduce_mean(values, axis=-1) * mask) / words
    return (loss, cell_cross_entropy, penalty, mean_over_words(rewards), mean_over_words(baselines),
            tf.reduce_sum(entropy * mask) / words)


def self_critical_loss(logits, targets, rewards, baselines):
    """Rennie et al. 2017: raise log p(sample) in proportion to how much its CIDEr-D beats its baseline.

    logits (B, T, V) of the decoder fed each sampled caption; targets (B, T) the sample's words and
    `<end>`, 0 after; rewards and baselines (B,).
    """
    mask = tf.cast(targets != 0, tf.float32)
    word_log_probabilities = target_log_probabilities(tf.nn.log_softmax(logits), targets)
    log_probability = tf.reduce_sum(word_log_probabilities * mask, axis=1)  # (B,) of each whole sample
    return reinforce.policy_gradient_loss(log_probability, rewards, baselines)
