"""REINFORCE, the score-function estimator, as hard attention and self-critical training use it.

For choices s drawn from a policy p_theta and a reward R(s),

    grad_theta E[R] = E[ (R(s) - b) * grad_theta log p_theta(s) ]

for any baseline b that does not depend on s: the baseline leaves the estimate unbiased
and, close to E[R], makes its variance much smaller. Hard attention (Xu et al. 2015,
section 4.1) draws one image location per word, rewards it with the caption's
log-likelihood, keeps b as a moving average of past rewards and adds an entropy bonus
so the attention does not collapse too early; self-critical training (Rennie et al. 2017)
draws whole captions and uses the greedy caption's reward as b.
"""

from __future__ import annotations

import tensorflow as tf

BASELINE_DECAY = 0.9  # the paper's b_k = 0.9 b_(k-1) + 0.1 R_k
EPSILON = 1e-9


def policy_gradient_loss(log_probabilities, rewards, baseline):
    """A loss whose gradient is the REINFORCE estimate of -grad E[R], averaged over the samples.

    log_probabilities (N,) of the choices made (differentiable), rewards (N,), baseline () or (N,).
    No gradient flows through the rewards or the baseline.
    """
    advantage = tf.stop_gradient(tf.cast(rewards, tf.float32) - tf.cast(baseline, tf.float32))
    return -tf.reduce_mean(advantage * log_probabilities)


def moving_average_baseline(baseline, rewards, started, decay: float = BASELINE_DECAY):
    """The next baseline: decay * b + (1 - decay) * mean reward; the first batch's mean when not `started`."""
    mean_reward = tf.reduce_mean(rewards)
    return tf.where(started, decay * baseline + (1.0 - decay) * mean_reward, mean_reward)


def entropy(probabilities, axis: int = -1):
    """Entropy (nats) of distributions along `axis`."""
    return -tf.reduce_sum(probabilities * tf.math.log(probabilities + EPSILON), axis=axis)
