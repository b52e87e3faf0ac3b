"""A real, tiny end-to-end computation: learn to segment bright disks.

It exercises jax, flax, optax and the workdir conventions in a few seconds, and
reports the IoU on held-out images so a broken install shows up as a number.
"""

import json
import os

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax


def _disks(rng, n, size):
  """Noisy images `[n, size, size, 1]` with one bright disk each, and masks."""
  yy, xx = np.mgrid[:size, :size]
  cy, cx = rng.uniform(size * 0.25, size * 0.75, (2, n, 1, 1))
  r = rng.uniform(size * 0.1, size * 0.25, (n, 1, 1))
  masks = ((yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2).astype(np.float32)
  images = masks + 0.3 * rng.standard_normal(masks.shape).astype(np.float32)
  return images[..., None], masks[..., None]


class _TinyFCN(nn.Module):

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(8, (3, 3), name="conv1")(x))
    return nn.Conv(1, (3, 3), name="logits")(x)


def run(config, workdir):
  """Trains the tiny FCN and writes `metrics.json` into `workdir`."""
  rng = np.random.default_rng(config.seed)
  model = _TinyFCN()
  params = model.init(jax.random.key(config.seed),
                      jnp.zeros((1, config.image_size, config.image_size, 1)))
  tx = optax.adam(config.learning_rate)
  opt_state = tx.init(params)

  @jax.jit
  def train_step(params, opt_state, images, masks):
    def loss_fn(p):
      return optax.sigmoid_binary_cross_entropy(
          model.apply(p, images), masks).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  for step in range(config.num_steps):
    images, masks = _disks(rng, config.batch_size, config.image_size)
    params, opt_state, loss = train_step(params, opt_state, images, masks)
  images, masks = _disks(rng, 64, config.image_size)
  pred = np.asarray(model.apply(params, images)) > 0
  iou = float((pred & (masks > 0)).sum() / max((pred | (masks > 0)).sum(), 1))
  metrics = {"final_loss": float(loss), "test_iou": iou}
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "metrics.json"), "w") as f:
    json.dump(metrics, f)
  logging.info("smoke: %s", metrics)
  print(f"smoke: final loss {metrics['final_loss']:.4f}, "
        f"held-out IoU {metrics['test_iou']:.3f} (workdir {workdir})")
