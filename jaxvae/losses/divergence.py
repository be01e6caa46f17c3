"""KL divergences of diagonal Gaussian posteriors, and the free-bits floor.

Computed in float32: `exp(logvar)` overflows in float16 long before the KL is large.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxvae.losses import reduce


def gaussian_kl(mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mu, exp(logvar)) || N(0, I)) per latent dimension, shape of `mu`."""
  mu = mu.astype(jnp.float32)
  logvar = logvar.astype(jnp.float32)
  return 0.5 * (jnp.square(mu) + jnp.exp(logvar) - 1.0 - logvar)


def free_bits_kl(
  mu: jax.Array, logvar: jax.Array, mask: jax.Array, free_bits: float
) -> tuple[jax.Array, jax.Array]:
  """(KL to penalize, KL to report), both scalars summed over latent dimensions.

  Each dimension's KL is averaged over the real examples (`mask` [B]); free bits then floor
  each dimension's batch mean at `free_bits` nats in the penalized value, so the optimizer
  gains nothing from pushing a dimension's KL below the floor (against posterior collapse).
  """
  mask = jnp.asarray(mask).astype(jnp.float32)
  # where, not a product: a padded row's exp(logvar) may overflow, and inf * 0 is NaN.
  per_dim = jnp.where(mask[:, None] > 0, gaussian_kl(mu, logvar), 0.0)
  dim_mean = reduce.masked_mean(per_dim, mask)
  reported = jnp.sum(dim_mean)
  if free_bits > 0:
    return jnp.sum(jnp.maximum(dim_mean, free_bits)), reported
  return reported, reported
