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


def deeply_supervised_bce(fused_logits, side_logits, labels, side_weight,
                          mask=None):
  """Class-balanced BCE of the fused output plus weighted side outputs.

  HED / OSVOS deep supervision (OSVOS-PyTorch train_parent.py):
    total = side_weight * sum_i L(side_i) + L(fused),
  with L = class_balanced_bce, each normalised by pixel count. `side_weight`
  fades deep supervision, e.g.
  vosjax.train.side_loss_weight(epoch, num_epochs) = 1 - epoch / num_epochs
  as in train_parent.py; OSVOS's online fine-tuning uses the fused loss only
  (train_online.py): side_weight = 0.

  Args:
    fused_logits: `[B, ...]` logits (e.g. `[B, H, W, 1]`, FC-I3D's
      `[B, T, H, W, 1]`).
    side_logits: sequence of logits shaped like `fused_logits`.
    labels: `[B, ...]` in {0, 1}, shaped like `fused_logits`.
    side_weight: scalar (Python number or traced array).
    mask: optional `[B, ...]` {0, 1} of pixels that count (0: void).

  Returns:
    (total scalar, metrics) with metrics "loss_side{i}" per side output and
    "loss_fused".
  """
  # Learning rate. OSVOS-PyTorch (train_parent.py, train_online.py) sums each
  # loss over the pixels (osvos_layers.py `class_balanced_cross_entropy_loss`
  # with size_average=False; batch 1) and trains with SGD lr 1e-8, momentum
  # 0.9, the gradient averaged over nAveGrad images (10 parent, 5 online).
  # This loss is that sum divided by N = H * W pixels, so its gradient is
  # 1/N times theirs and, SGD with momentum being linear in the gradient,
  # lr = 1e-8 * N reproduces their steps: at DAVIS 480x854, N = 409,920 and
  # lr = 4.0992e-3 (at a C x C training crop, 1e-8 * C^2). Their weight decay
  # 2e-4 is added to the summed-loss gradient, i.e. 2e-4 * 1e-8 per step; the
  # same decay here is weight_decay = 2e-4 / N (4.9e-10 at 480x854, nil in
  # practice), not 2e-4.
  side = [class_balanced_bce(s, labels, mask) for s in side_logits]
  fused = class_balanced_bce(fused_logits, labels, mask)
  total = fused + side_weight * sum(side) if side else fused
  metrics = {f"loss_side{i}": l for i, l in enumerate(side)}
  metrics["loss_fused"] = fused
  return total, metrics


# ---------------------------------------------------------------------------
# PML modified triplet loss (Chen et al., CVPR 2018, Sec. 3.2).


def pad_rows(x, multiple, value):
  """Pads axis 0 of `x` up to a multiple of `multiple` with `value`."""
  pad = (-x.shape[0]) % multiple
  if pad == 0:
    return x
  widths = [(0, pad)] + [(0, 0)] * (x.ndim - 1)
  return jnp.pad(x, widths, constant_values=value)


def hardest_pos_neg_indices(anchor_emb, anchor_labels, ref_emb, ref_labels, *,
                            chunk_size=1024, ref_chunk_size=4096):
  """Indices of the nearest positive and nearest negative reference per anchor.

  Squared L2 distances are evaluated in `[chunk_size, ref_chunk_size]` tiles
  (lax.map over anchor chunks, lax.scan over reference chunks with a running
  minimum), so the full `[A, R]` matrix never exists. Negative labels mark
  ignored pixels: they are in neither pool. Among equal distances the lower
  reference index wins.

  Args:
    anchor_emb: `[A, D]` float.
    anchor_labels: `[A]` int object ids (< 0: ignored).
    ref_emb: `[R, D]` float.
    ref_labels: `[R]` int object ids (< 0: ignored).
    chunk_size: anchors per tile.
    ref_chunk_size: references per tile.

  Returns:
    `(pos_idx [A], neg_idx [A], has_pos [A] bool, has_neg [A] bool)`; indices
    are into `ref_emb` and meaningless where the pool is empty.
  """
  a = anchor_emb.shape[0]
  r = ref_emb.shape[0]
  chunk_size = max(1, min(chunk_size, a))
  ref_chunk_size = max(1, min(ref_chunk_size, r))
  anc = jax.lax.stop_gradient(anchor_emb).astype(jnp.float32)
  ref = jax.lax.stop_gradient(ref_emb).astype(jnp.float32)
  anc = pad_rows(anc, chunk_size, 0.0).reshape(-1, chunk_size, anc.shape[1])
  alab = pad_rows(anchor_labels.astype(jnp.int32), chunk_size, -1)
  alab = alab.reshape(-1, chunk_size)
  refp = pad_rows(ref, ref_chunk_size, 0.0)
  rlab = pad_rows(ref_labels.astype(jnp.int32), ref_chunk_size, -1)
  num_ref_chunks = refp.shape[0] // ref_chunk_size
  refp = refp.reshape(num_ref_chunks, ref_chunk_size, -1)
  rlab = rlab.reshape(num_ref_chunks, ref_chunk_size)
  rsq = jnp.sum(refp * refp, -1)
  offsets = jnp.arange(num_ref_chunks, dtype=jnp.int32) * ref_chunk_size

  def per_anchor_chunk(args):
    e, lab = args
    esq = jnp.sum(e * e, -1)

    def step(carry, xs):
      best_p, idx_p, best_n, idx_n = carry
      rc, rl, rs, off = xs
      # Expanded form: one matmul per tile instead of a [c, r, D] difference.
      d = esq[:, None] + rs[None, :] - 2.0 * e @ rc.T
      valid = rl[None, :] >= 0
      same = rl[None, :] == lab[:, None]
      dp = jnp.where(valid & same, d, jnp.inf)
      dn = jnp.where(valid & ~same, d, jnp.inf)
      jp = jnp.argmin(dp, -1)
      jn = jnp.argmin(dn, -1)
      mp = jnp.take_along_axis(dp, jp[:, None], -1)[:, 0]
      mn = jnp.take_along_axis(dn, jn[:, None], -1)[:, 0]
      # Strict < keeps the earlier chunk on ties (lower index wins).
      up = mp < best_p
      un = mn < best_n
      return (jnp.where(up, mp, best_p), jnp.where(up, jp + off, idx_p),
              jnp.where(un, mn, best_n), jnp.where(un, jn + off, idx_n)), None

    c = e.shape[0]
    init = (jnp.full((c,), jnp.inf), jnp.zeros((c,), jnp.int32),
            jnp.full((c,), jnp.inf), jnp.zeros((c,), jnp.int32))
    (bp, ip, bn, in_), _ = jax.lax.scan(step, init, (refp, rlab, rsq, offsets))
    return ip, in_, jnp.isfinite(bp), jnp.isfinite(bn)

  ip, in_, hp, hn = jax.lax.map(per_anchor_chunk, (anc, alab))
  return (ip.reshape(-1)[:a], in_.reshape(-1)[:a], hp.reshape(-1)[:a],
          hn.reshape(-1)[:a])


def modified_triplet_loss(anchor_emb, anchor_labels, ref_emb, ref_labels,
                          margin, *, chunk_size=1024, ref_chunk_size=4096):
  """Modified triplet loss of PML (Chen et al., CVPR 2018, Eq. 2).

  For each anchor a with positive pool P(a) (references with the same label)
  and negative pool N(a) (references with a different label):
    loss(a) = max(0, min_{p in P(a)} ||e_a - e_p||^2
                     - min_{n in N(a)} ||e_a - e_n||^2 + margin),
  averaged over anchors whose P(a) and N(a) are both non-empty (0 if none).
  Labels are object ids (0 = background), so several objects work as is;
  labels < 0 mark ignored / padded pixels (excluded as anchors and from both
  pools).

  The hardest positive and negative are searched in tiles without gradient
  (`hardest_pos_neg_indices`); the two distances are then recomputed from the
  gathered embeddings. This is exactly the (sub)gradient of the min, costs
  O(A * D) memory in the backward pass, and never forms the `[A, R]` matrix.

  Args:
    anchor_emb: `[A, D]` float anchor embeddings.
    anchor_labels: `[A]` int.
    ref_emb: `[R, D]` float reference embeddings.
    ref_labels: `[R]` int.
    margin: hinge margin (float, in squared-distance units).
    chunk_size: anchors per tile.
    ref_chunk_size: references per tile.

  Returns:
    Scalar float32 loss.
  """
  ip, in_, hp, hn = hardest_pos_neg_indices(
      anchor_emb, anchor_labels, ref_emb, ref_labels, chunk_size=chunk_size,
      ref_chunk_size=ref_chunk_size)
  anc = anchor_emb.astype(jnp.float32)
  ref = ref_emb.astype(jnp.float32)
  d_pos = jnp.sum(jnp.square(anc - ref[ip]), -1)
  d_neg = jnp.sum(jnp.square(anc - ref[in_]), -1)
  ok = hp & hn & (anchor_labels >= 0)
  per_anchor = jnp.where(ok, jax.nn.relu(d_pos - d_neg + margin), 0.0)
  count = jnp.sum(ok)
  return jnp.sum(per_anchor) / jnp.maximum(count, 1).astype(jnp.float32)
