"""Reductions shared by every loss: per-example sums and means, and the masked batch mean.

Evaluation batches are padded to a fixed size; `batch['mask']` is 1 for a real example and 0
for padding, and `masked_mean` is the one place that makes padding count for nothing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def per_example_sum(x: jax.Array) -> jax.Array:
  """Sum over every axis but the first: `[B, ...]` -> `[B]`."""
  return jnp.sum(x.reshape(x.shape[0], -1), axis=-1)


def per_example_mean(x: jax.Array) -> jax.Array:
  """Mean over every axis but the first: `[B, ...]` -> `[B]`."""
  return jnp.mean(x.reshape(x.shape[0], -1), axis=-1)


def masked_mean(values: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Mean of `values` over the axes of `mask`, counting only entries where `mask` is 1.

  With a per-example mask `[B]` and values `[B, ...]` it is the mean over the real examples
  (trailing axes kept: per-dimension means of `[B, L]`); with a mask of the values' own shape
  (token weights `[B, T]`) it is the mean over the counted entries. An all-zero mask gives 0,
  not NaN. Without a mask: the plain mean over the batch axis.
  """
  values = values.astype(jnp.float32)
  if mask is None:
    return jnp.mean(values, axis=0)
  mask = jnp.asarray(mask).astype(jnp.float32)
  axes = tuple(range(mask.ndim))
  weights = mask.reshape(mask.shape + (1,) * (values.ndim - mask.ndim))
  return jnp.sum(values * weights, axis=axes) / jnp.maximum(jnp.sum(mask), 1.0)
