"""The spectral MusicVAE's conv VAE and HarmonicVAE's MLP VAE, trained on the spectral MusicVAE's
objective.

`spectral_elbo` combines the reconstruction-side terms of `jaxvae.losses.reconstruction`
(per-example means over the spectrogram) with a free-bits KL; `validate` checks its keys.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxvae.errors import ConfigError
from jaxvae.losses import divergence
from jaxvae.losses import reconstruction
from jaxvae.losses import reduce
from jaxvae.models import spectral
from jaxvae.variants.base import Variant

RECON_LOSSES = ("mse", "weighted_mse")


def _recon_term(recon, x, mse, objective_config):
  """Per-example reconstruction term `[B]`; `mse` (per-example MSE) is reused for 'mse'."""
  kind = objective_config.recon_loss
  if kind == "mse":
    return mse
  if kind == "weighted_mse":
    weights = reconstruction.band_weights(x.shape[1], tuple(objective_config.bands))
    return reconstruction.frequency_weighted_mse(recon, x, weights)
  raise ValueError(f"objective.recon_loss must be 'mse' or 'weighted_mse', got {kind!r}")


def spectral_elbo(outputs, batch, *, kl_weight, config):
  """The spectral MusicVAE's objective: recon + spectral + range terms + kl_weight * KL.

  Reductions: every reconstruction-side term is a per-example MEAN over the spectrogram's
  elements (weighted mean for 'weighted_mse', mean over rows, windows and bins for the
  spectral term), then a masked mean over the batch; the KL is summed over latent dimensions
  (batch mean per dimension, floored at `config.kl.free_bits`). Because the recon term is a
  mean, not a sum as in `audio_vae.elbo`, the KL weight that balances it is much smaller.

  Config: `objective.recon_loss` ('mse' | 'weighted_mse'), `objective.bands` ((start, end,
  weight), ...), `objective.spectral_weight`, `objective.fft_sizes` (() = one full-length
  FFT), `objective.range_weight`, optional `objective.spectral_kind` ('l1'), optional
  `objective.range_margin` (0.0), `kl.free_bits`. A term whose weight is 0 is not computed and
  reports 0.
  """
  oc = config.objective
  x, recon, mask = batch["x"], outputs["recon"], batch["mask"]
  sq = reconstruction.mean_squared_error(recon, x)
  recon_mse = reduce.masked_mean(sq, mask)
  recon_value = reduce.masked_mean(_recon_term(recon, x, sq, oc), mask)
  zero = jnp.zeros((), jnp.float32)
  spectral_term = zero
  if oc.spectral_weight != 0:
    sizes = tuple(int(s) for s in oc.fft_sizes) or (None,)
    spectral_term = reduce.masked_mean(
      reconstruction.spectral_loss(recon, x, sizes, oc.get("spectral_kind", "l1")), mask
    )
  out_of_range = zero
  if oc.range_weight != 0:
    out_of_range = reduce.masked_mean(
      reconstruction.range_penalty(recon, x, oc.get("range_margin", 0.0)), mask
    )
  kl_penalized, kl = divergence.free_bits_kl(
    outputs["mu"], outputs["logvar"], mask, config.kl.free_bits
  )
  loss = (
    recon_value
    + oc.spectral_weight * spectral_term
    + oc.range_weight * out_of_range
    + kl_weight * kl_penalized
  )
  return loss, {
    "loss": loss,
    "recon": recon_value,
    "spectral": spectral_term,
    "range": out_of_range,
    "kl": kl,
    "recon_mse": recon_mse,
    "kl_weight": jnp.asarray(kl_weight, jnp.float32),
  }


def _check_choice(key: str, value, allowed) -> None:
  if value not in allowed:
    raise ConfigError(
      f"config key 'objective.{key}' is {value!r}; expected one of {', '.join(allowed)}"
    )


def validate(config) -> None:
  """The keys of `spectral_elbo`: one ConfigError naming the key at load time, rather than a
  failure at the first traced step."""
  oc = config.objective
  _check_choice("recon_loss", oc.recon_loss, RECON_LOSSES)
  _check_choice("spectral_kind", oc.get("spectral_kind", "l1"), reconstruction.SPECTRAL_KINDS)
  for key in ("spectral_weight", "range_weight", "range_margin"):
    if oc.get(key, 0.0) < 0:
      raise ConfigError(f"config key 'objective.{key}' must be >= 0")
  if any(int(size) < 2 for size in oc.fft_sizes):
    raise ConfigError(
      "config key 'objective.fft_sizes': each size must be >= 2 "
      f"frames (got {tuple(oc.fft_sizes)}; () = one full-length FFT)"
    )
  try:
    reconstruction.band_weights(8, tuple(oc.bands))
  except ValueError as e:
    raise ConfigError(f"config key 'objective.bands': {e}") from None


SPECTRAL = Variant(spectral.build_spectral_vae, spectral_elbo, validate=validate)
HARMONIC = Variant(spectral.build_harmonic_vae, spectral_elbo, validate=validate)
