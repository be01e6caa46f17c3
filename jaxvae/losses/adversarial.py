"""GAN losses on discriminator outputs, feature matching, R1, and straight-through sampling.

Discriminator outputs are lists with one `{'logits': [B] or [B, ...], 'features': [[B, ...],
...]}` per scale or sub-discriminator (what `MusicTransformer.discriminate` and the vocoder's
discriminators return); logits maps (a patch discriminator's) are averaged per example after
the loss is applied at each position. Each loss sums or averages over the scales. `mask` [B]
leaves padded examples out; None averages over the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxvae.losses import reduce

GAN_LOSSES = ("hinge", "ns")


def gumbel_softmax(logits, rng, tau: float = 1.0, hard: bool = True):
  """Samples [.., V] rows; with `hard`, one-hot forward and softmax gradient (straight-through)."""
  gumbel = jax.random.gumbel(rng, logits.shape, jnp.float32)
  soft = jax.nn.softmax((logits.astype(jnp.float32) + gumbel) / tau, axis=-1)
  if not hard:
    return soft
  one_hot = jax.nn.one_hot(jnp.argmax(soft, -1), logits.shape[-1], dtype=soft.dtype)
  return one_hot + soft - jax.lax.stop_gradient(soft)


def discriminator_loss(real_outs, fake_outs, mask=None, kind: str = "hinge"):
  """Summed over scales: hinge E[relu(1 - D(real))] + E[relu(1 + D(fake))], or the
  non-saturating E[softplus(-D(real))] + E[softplus(D(fake))]."""
  total = 0.0
  for real, fake in zip(real_outs, fake_outs):
    r, f = real["logits"], fake["logits"]
    if kind == "hinge":
      total += _mean(jax.nn.relu(1.0 - r), mask) + _mean(jax.nn.relu(1.0 + f), mask)
    else:
      total += _mean(jax.nn.softplus(-r), mask) + _mean(jax.nn.softplus(f), mask)
  return total


def _mean(values, mask=None):
  """Per-position values [B, ...] -> their per-example mean, then the masked batch mean."""
  return reduce.masked_mean(reduce.per_example_mean(values), mask)


def generator_adv_loss(fake_outs, mask=None, kind: str = "hinge"):
  """Summed over scales: hinge -E[D(fake)], or non-saturating E[softplus(-D(fake))]."""
  total = 0.0
  for fake in fake_outs:
    f = fake["logits"]
    total += _mean(-f, mask) if kind == "hinge" else _mean(jax.nn.softplus(-f), mask)
  return total


def feature_matching_loss(real_outs, fake_outs, mask=None):
  """Mean L1 between the discriminator's features of a window and of its reconstruction,
  averaged over all layers of all scales; the real side is a constant target."""
  losses = []
  for real, fake in zip(real_outs, fake_outs):
    for fr, ff in zip(real["features"], fake["features"]):
      diff = jnp.abs(jax.lax.stop_gradient(fr) - ff)
      losses.append(reduce.masked_mean(reduce.per_example_mean(diff), mask))
  return sum(losses) / max(len(losses), 1)


def r1_penalty(disc_fn: Callable, real_inputs, mask=None):
  """R1 = 0.5 * E ||d sum_scales D(x) / dx||^2 over real inputs (per example, masked mean).

  `disc_fn(x)` returns the discriminator output list; the discriminator has no batch
  statistics, so the gradient of the batch sum splits into per-example gradients.
  """

  def total(x):
    return jnp.sum(sum(out["logits"] for out in disc_fn(x)))

  grads = jax.grad(total)(real_inputs.astype(jnp.float32))
  return reduce.masked_mean(0.5 * reduce.per_example_sum(jnp.square(grads)), mask)


def mean_logit(outs, mask=None):
  """The discriminator's mean logit over scales and real examples (a health metric)."""
  return sum(_mean(o["logits"], mask) for o in outs) / len(outs)
