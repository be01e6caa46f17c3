"""The Gaussian VAEs on spectrograms (the multilingual music VAE family): fully connected and
convolutional.

Both train on the negative ELBO with a weighted KL (`elbo`); a beta-VAE and the CVAEs are
these variants with another config. `recon_terms` is shared with the families whose
objective adds to this one (VaDE, multimodal).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxvae.losses import divergence
from jaxvae.losses import reconstruction
from jaxvae.losses import reduce
from jaxvae.models import vae
from jaxvae.variants.base import Variant


def recon_terms(outputs, batch, config) -> tuple[jax.Array, jax.Array]:
  """(masked batch mean of the per-example NLL summed over features (`objective.recon`),
  masked batch mean of the per-example MSE per feature)."""
  mask = batch["mask"]
  recon = reduce.masked_mean(
    reconstruction.nll(outputs["recon"], batch["x"], config.objective.recon), mask
  )
  mse = reduce.masked_mean(reconstruction.mean_squared_error(outputs["recon"], batch["x"]), mask)
  return recon, mse


def recon_likelihood(config) -> str:
  """The decoder likelihood `objective.recon` implies: 'bernoulli' for 'bce', else
  'gaussian' (the sum of squared errors)."""
  return "bernoulli" if config.objective.recon == "bce" else "gaussian"


def elbo(outputs, batch, *, kl_weight, config):
  """Negative ELBO with a weighted KL (beta-VAE when the weight exceeds 1), free bits
  `kl.free_bits` nats per latent dimension; float32, averaged over real examples."""
  recon, mse = recon_terms(outputs, batch, config)
  kl_penalized, kl = divergence.free_bits_kl(
    outputs["mu"], outputs["logvar"], batch["mask"], config.kl.free_bits
  )
  loss = recon + kl_weight * kl_penalized
  return loss, {
    "loss": loss,
    "recon": recon,
    "kl": kl,
    "recon_mse": mse,
    "kl_weight": jnp.asarray(kl_weight, jnp.float32),
  }


BASIC = Variant(vae.build_basic_vae, elbo, likelihood=recon_likelihood)
CONV = Variant(vae.build_conv_vae, elbo, likelihood=recon_likelihood)
