"""The VQ-VAE objective: reconstruction MSE plus the quantizer's loss (seed 004)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _masked_mean(per_example: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean over real examples; padded ones (mask 0) do not count."""
  total = jnp.sum(mask)
  return jnp.sum(mask * per_example) / jnp.where(total > 0, total, 1.0)


def vq_objective(outputs: dict, batch: dict, *, kl_weight, config) -> tuple[jax.Array, dict]:
  """loss = masked mean over examples of the per-example MSE + outputs['vq_loss'].

  `kl_weight` is unused (a VQ model has no KL term) and `config` needs no keys; both are taken
  to keep the objective signature every variant shares.
  """
  del kl_weight, config
  x = jnp.asarray(batch["x"], jnp.float32)
  recon = outputs["recon"].astype(jnp.float32)
  mask = jnp.asarray(batch.get("mask", jnp.ones(x.shape[:1])), jnp.float32)
  per_example = jnp.mean(jnp.square(recon - x).reshape(x.shape[0], -1), axis=-1)
  recon_mse = _masked_mean(per_example, mask)
  vq_loss = outputs["vq_loss"].astype(jnp.float32)
  loss = recon_mse + vq_loss
  metrics = {
      "loss": loss,
      "recon_mse": recon_mse,
      "vq_loss": vq_loss,
      "codebook_loss": outputs["codebook_loss"].astype(jnp.float32),
      "commitment_loss": outputs["commitment_loss"].astype(jnp.float32),
      "perplexity": outputs["perplexity"].astype(jnp.float32),
  }
  return loss, metrics
