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


def gaussian_kl_between(
  mu_q: jax.Array, logvar_q: jax.Array, mu_p: jax.Array, logvar_p: jax.Array
) -> jax.Array:
  """KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p))) per dimension, float32; the
  log-variances are clipped to [-30, 30] so that no exp overflows."""
  mu_q, mu_p = mu_q.astype(jnp.float32), mu_p.astype(jnp.float32)
  logvar_q, logvar_p = (jnp.clip(v.astype(jnp.float32), -30.0, 30.0) for v in (logvar_q, logvar_p))
  return 0.5 * (
    logvar_p - logvar_q + (jnp.exp(logvar_q) + jnp.square(mu_q - mu_p)) * jnp.exp(-logvar_p) - 1.0
  )


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


def mmd_to_normal(z: jax.Array, key: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """Maximum mean discrepancy between latent vectors z [N, D] (weights [N], 1 by default) and
  as many draws of N(0, I), with an inverse multiquadric kernel k(a, b) = C / (C + ||a - b||^2),
  C = 2 D (the Wasserstein autoencoder's; RAVE's alternative to the KL): a scalar >= about 0."""
  z = z.astype(jnp.float32)
  n, d = z.shape
  w = jnp.ones((n,), jnp.float32) if weights is None else weights.astype(jnp.float32)
  w = w / jnp.maximum(jnp.sum(w), 1.0)
  prior = jax.random.normal(key, z.shape)
  c = 2.0 * d

  def kernel(a, b):
    sq = jnp.sum(a * a, -1)[:, None] - 2.0 * a @ b.T + jnp.sum(b * b, -1)[None, :]
    return c / (c + jnp.maximum(sq, 0.0))

  u = jnp.full((n,), 1.0 / n)
  return w @ kernel(z, z) @ w + u @ kernel(prior, prior) @ u - 2.0 * w @ kernel(z, prior) @ u
