"""Objectives: `objective(outputs, batch, *, kl_weight, config) -> (loss, metrics)`.

Everything here is computed in float32 whatever the model's compute dtype, and averaged over
the batch with `batch['mask']` so padded evaluation batches count only real examples.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_mean(values: jax.Array, batch) -> jax.Array:
  """Mean over the batch axis of per-example `values`, counting only mask == 1."""
  mask = batch["mask"].astype(jnp.float32)
  return jnp.sum(values.astype(jnp.float32) * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def _per_example_sum(x: jax.Array) -> jax.Array:
  return jnp.sum(x.reshape(x.shape[0], -1), axis=-1)


def reconstruction(recon: jax.Array, x: jax.Array, kind: str) -> jax.Array:
  """Per-example negative log-likelihood (up to a constant), summed over features."""
  x = x.astype(jnp.float32)
  recon = recon.astype(jnp.float32)
  if kind == "bce":
    p = jnp.clip(recon, 1e-6, 1.0 - 1e-6)
    return _per_example_sum(-(x * jnp.log(p) + (1.0 - x) * jnp.log1p(-p)))
  return _per_example_sum(jnp.square(recon - x))


def gaussian_kl(mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mu, exp(logvar)) || N(0, I)) per latent dimension, shape of `mu`."""
  mu = mu.astype(jnp.float32)
  logvar = logvar.astype(jnp.float32)
  return 0.5 * (jnp.square(mu) + jnp.exp(logvar) - 1.0 - logvar)


def kl_term(mu, logvar, batch, free_bits: float) -> tuple[jax.Array, jax.Array]:
  """(KL to penalize, KL to report): free bits floors each dimension's batch-mean KL."""
  mask = batch["mask"].astype(jnp.float32)[:, None]
  # where, not a product: a padded row's exp(logvar) may overflow, and inf * 0 is NaN.
  per_dim = jnp.where(mask > 0, gaussian_kl(mu, logvar), 0.0)
  dim_mean = jnp.sum(per_dim * mask, 0) / jnp.maximum(jnp.sum(mask), 1.0)
  reported = jnp.sum(dim_mean)
  if free_bits > 0:
    return jnp.sum(jnp.maximum(dim_mean, free_bits)), reported
  return reported, reported


def elbo(outputs, batch, *, kl_weight, config):
  """Negative ELBO with a weighted KL (beta-VAE when the weight exceeds 1)."""
  recon = masked_mean(reconstruction(outputs["recon"], batch["x"], config.objective.recon), batch)
  kl_penalized, kl = kl_term(outputs["mu"], outputs["logvar"], batch, config.kl.free_bits)
  loss = recon + kl_weight * kl_penalized
  n_features = batch["x"][0].size
  mse = masked_mean(_per_example_sum(jnp.square(outputs["recon"] - batch["x"])), batch)
  return loss, {"loss": loss, "recon": recon, "kl": kl, "recon_mse": mse / n_features,
                "kl_weight": jnp.asarray(kl_weight, jnp.float32)}
