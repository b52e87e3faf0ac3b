"""Losses shared by the methods.

All losses take logits (not probabilities) and use log-sigmoid forms, which
stay finite for any logit magnitude.
"""

import jax
import jax.numpy as jnp


def class_balanced_bce(logits, labels, mask=None):
  """Class-balanced binary cross-entropy of OSVOS / FC-I3D.

  loss = -(1/|Y|) * [ (|Y-|/|Y|) * sum_{Y+} log s(x)
                    + (|Y+|/|Y|) * sum_{Y-} log(1 - s(x)) ]
  with |Y+|, |Y-| counted per example, so positives are weighted by the
  fraction of negatives and vice versa, and the sum normalised by pixel count.

  Args:
    logits: `[B, ...]` float logits.
    labels: `[B, ...]` in {0, 1} (same shape as logits).
    mask: optional `[B, ...]` {0, 1}; pixels with 0 are ignored (e.g. void).

  Returns:
    Scalar: the mean over the batch of the per-example loss.
  """
  logits = logits.astype(jnp.float32)
  labels = labels.astype(jnp.float32)
  valid = jnp.ones_like(labels) if mask is None else mask.astype(jnp.float32)
  axes = tuple(range(1, logits.ndim))
  num_pos = jnp.sum(labels * valid, axes, keepdims=True)
  num_neg = jnp.sum((1 - labels) * valid, axes, keepdims=True)
  total = jnp.maximum(num_pos + num_neg, 1.0)
  # log(1 - sigmoid(x)) = log_sigmoid(-x): both terms finite for any x.
  pos_term = labels * jax.nn.log_sigmoid(logits)
  neg_term = (1 - labels) * jax.nn.log_sigmoid(-logits)
  weighted = (num_neg / total) * pos_term + (num_pos / total) * neg_term
  per_example = -jnp.sum(weighted * valid, axes) / total.reshape(-1)
  return jnp.mean(per_example)
