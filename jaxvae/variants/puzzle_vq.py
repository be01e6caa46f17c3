"""The audio puzzle VQ-VAE as a variant: its objective and the k-means codebook init.

The quantizer computes its own codebook and commitment losses (`jaxvae.models.vq`); the
objective only adds the reconstruction error.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae import multihost
from jaxvae.errors import ConfigError
from jaxvae.losses import reconstruction
from jaxvae.losses import reduce
from jaxvae.models import quantizers
from jaxvae.models import vq
from jaxvae.models import vqvae
from jaxvae.variants.base import Variant


def objective(outputs: dict, batch: dict, *, kl_weight, config) -> tuple[jax.Array, dict]:
  """loss = masked mean over examples of the per-example MSE + outputs['vq_loss'].

  `kl_weight` is unused (a VQ model has no KL term) and `config` needs no keys; both are taken
  to keep the objective signature every variant shares.
  """
  del kl_weight, config
  x = batch["x"]
  mask = batch.get("mask", jnp.ones(x.shape[:1]))
  recon_mse = reduce.masked_mean(reconstruction.mean_squared_error(outputs["recon"], x), mask)
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
  if "levels_used" in outputs:  # rvq: the mean number of levels the examples used
    metrics["levels_used"] = outputs["levels_used"].astype(jnp.float32)
  return loss, metrics


def data_init(state, model: vqvae.PuzzleVQVAE, batches, config):
  """k-means codebook initialization from encoder outputs of a few training batches.

  Runs before the first step when `config.model.kmeans_init` is set; the result is part of
  the first checkpoint, so a resumed run never repeats it.
  """
  if not config.model.get("kmeans_init", False):
    return state
  variables = {"params": state.params, **state.model_state}
  encode = jax.jit(lambda v, b: model.apply(v, b, train=False, method="encode"))
  # A few batches are plenty: each clip gives grid_h * grid_w encoder vectors.
  chunks = []
  for b, _ in zip(batches(), range(config.model.get("kmeans_batches", 8))):
    z, mask = multihost.to_host((encode(variables, b), b["mask"]))
    chunks.append(z[mask > 0].reshape(-1, model.code_dim))
  z = np.concatenate(chunks)
  if model.quantizer == "rvq":  # residual k-means, one codebook per level
    books = vq.kmeans_init_residual(z, model.num_codes, model.num_quantizers, seed=config.seed)
    for i, book in enumerate(books):
      variables = vq.with_codebook(variables, book, where=f"level_{i}")
  else:
    variables = vq.with_codebook(variables, vq.kmeans_init(z, model.num_codes, seed=config.seed))
  params = variables.pop("params")
  return state.replace(params=params, model_state=variables)


def validate(config) -> None:
  m = config.model
  kind = str(m.get("quantizer", "vq"))
  if kind not in quantizers.QUANTIZERS:
    raise ConfigError(
      f"config key 'model.quantizer' is {kind!r}; expected one of "
      f"{', '.join(quantizers.QUANTIZERS)}"
    )
  if m.get("kmeans_init", False) and (
    kind not in ("vq", "rvq") or kind == "rvq" and int(m.get("lookup_dim", 0))
  ):
    raise ConfigError(
      f"config key 'model.kmeans_init' is True with model.quantizer '{kind}'"
      + (" and model.lookup_dim > 0" if kind == "rvq" else "")
      + "; k-means fills the codebooks of 'vq' and 'rvq' (without factorized codes)"
    )
  if not 0.0 <= float(m.get("quantizer_dropout", 0.0)) <= 1.0:
    raise ConfigError(
      f"config key 'model.quantizer_dropout' is {m.quantizer_dropout}; expected a share in [0, 1]"
    )
  if kind == "fsq" and any(int(v) < 2 for v in m.fsq_levels):
    raise ConfigError(
      f"config key 'model.fsq_levels' is {tuple(m.fsq_levels)}; expected at least 2 values "
      "per dimension"
    )
  if kind == "lfq" and not 1 <= int(m.code_dim) <= 16:
    raise ConfigError(
      f"config key 'model.code_dim' is {m.code_dim}; model.quantizer 'lfq' quantizes that many "
      "bits (2^code_dim codes): expected 1..16"
    )
  if kind == "rvq" and int(m.get("lookup_dim", 0)) and m.use_ema:
    raise ConfigError(
      "config key 'model.use_ema' is True with model.lookup_dim > 0; factorized cosine codes "
      "learn their codebooks by gradient"
    )


VARIANT = Variant(
  vqvae.build_puzzle_vqvae,
  objective,
  validate=validate,
  data_init=data_init,
  latent=lambda config: "codes",
)
