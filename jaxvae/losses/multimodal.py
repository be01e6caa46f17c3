"""Objective of the multimodal VAE: audio + weighted lyrics reconstruction + weighted KL.

  loss = recon + lyrics_term + kl_weight * KL(q(z | audio, lyrics) || N(0, I))   (free bits)
  recon       = per-example audio reconstruction, summed over bins (objectives.reconstruction)
  lyrics_term = model.lyrics_weight * balance * lyrics distance, per example, 0 without lyrics

Why a lyrics weight, and why the balance factor is built in: the audio term is a sum over
n_mels x frames bins (165,376 at seed size), the lyrics term over D dims (768 for XLM-R), so
an unweighted sum gives the lyrics about 0.5 % of the likelihood and the latent would have
no reason to keep what only the lyrics tell (the language). `balance` rescales the lyrics
distance to the audio's size, from the shapes of the batch, so that it holds at any
resolution and for any text encoder (a fixed number in a config would be wrong as soon as
the preset or the encoder changed):
  'mse'     balance = n_audio / D: a lyrics dimension's squared error weighs as much as a
            spectrogram bin's, and the whole embedding as much as the whole spectrogram;
  'cosine'  balance = n_audio: 1 - cos is about 1 for an unrelated prediction, as a bin's
            squared error is about 1 for an unrelated prediction of unit-variance features.
`model.lyrics_weight` is then a relative weight: 1.0 (the default) makes the two modalities
count equally, 0 keeps the lyrics as an input only. The 'mse' balance assumes embedding
dimensions of roughly unit variance, like the normalized audio, but tools/embed_lyrics.py
writes raw pooled vectors (all-MiniLM-L6-v2 on the demo corpus: per-dimension variance 0.015,
so 'mse' would weigh the lyrics ~70x less than intended), hence 'cosine' is the default: it
ignores the vectors' scale (predicting the corpus mean leaves 1 - cos = 0.40 there). Text
encoders whose vectors all point one way (XLM-R's mean-pooled ones are strongly anisotropic)
leave less for the cosine to explain: raise the weight, or standardize the embeddings and
use 'mse'.

A clip without lyrics (`lyrics_mask` 0) contributes no lyrics term: its ELBO is that of the
audio alone. The lyrics term is still averaged over all real clips (`batch['mask']`), so a
clip's gradient does not depend on how many others in its batch have lyrics.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxvae.losses import core as objectives
from jaxvae.config.loading import ConfigError
from jaxvae.models.multimodal import FUSIONS

LYRICS_LOSSES = ("mse", "cosine")


def lyrics_distance(pred: jax.Array, target: jax.Array, kind: str) -> jax.Array:
  """Per-example [B] distance: sum of squares ('mse') or 1 - cosine similarity ('cosine')."""
  pred = pred.astype(jnp.float32)
  target = target.astype(jnp.float32)
  if kind == "cosine":
    # eps inside the norms: a zero vector (never a real embedding) must not give NaN.
    dot = jnp.sum(pred * target, -1)
    norms = jnp.sqrt(jnp.sum(jnp.square(pred), -1) * jnp.sum(jnp.square(target), -1) + 1e-12)
    return 1.0 - dot / norms
  return jnp.sum(jnp.square(pred - target), -1)


def lyrics_balance(kind: str, n_audio: int, lyrics_dim: int) -> float:
  """Scale that puts the lyrics distance on the audio term's footing (module docstring)."""
  return float(n_audio) if kind == "cosine" else n_audio / lyrics_dim


def _lyrics_mask(batch) -> jax.Array:
  mask = batch.get("lyrics_mask")
  if mask is None:
    return jnp.ones(batch["lyrics"].shape[:1], jnp.float32)
  return mask.astype(jnp.float32)


def multimodal_objective(outputs, batch, *, kl_weight, config):
  """Negative multimodal ELBO; metrics are batch means over real clips (`batch['mask']`).

  Metrics: loss, recon (audio), lyrics_recon (the raw lyrics distance, mean over clips that
  have lyrics), lyrics_term (what the lyrics add to the loss), kl, recon_mse (per bin),
  kl_weight.
  """
  kind = config.objective.get("lyrics_loss", "cosine")
  recon = objectives.masked_mean(
      objectives.reconstruction(outputs["recon"], batch["x"], config.objective.recon), batch)
  has = _lyrics_mask(batch) * batch["mask"].astype(jnp.float32)
  # where, not a product: whatever is predicted for a clip without lyrics (or for batch
  # padding) must not reach the loss, not even as a NaN.
  distance = jnp.where(has > 0, lyrics_distance(outputs["lyrics_recon"], batch["lyrics"],
                                                kind), 0.0)
  n_audio = batch["x"][0].size
  balance = lyrics_balance(kind, n_audio, batch["lyrics"].shape[-1])
  lyrics_term = (config.model.lyrics_weight * balance) * objectives.masked_mean(distance, batch)
  kl_penalized, kl = objectives.kl_term(outputs["mu"], outputs["logvar"], batch,
                                        config.kl.free_bits)
  loss = recon + lyrics_term + kl_weight * kl_penalized
  lyrics_recon = jnp.sum(distance) / jnp.maximum(jnp.sum(has), 1.0)
  mse = objectives.masked_mean(
      jnp.sum(jnp.square(outputs["recon"] - batch["x"]).reshape(batch["x"].shape[0], -1), -1),
      batch)
  return loss, {"loss": loss, "recon": recon, "lyrics_recon": lyrics_recon,
                "lyrics_term": lyrics_term, "kl": kl, "recon_mse": mse / n_audio,
                "kl_weight": jnp.asarray(kl_weight, jnp.float32)}


def validate(config) -> None:
  """Registry hook: the multimodal config keys, each mistake as one ConfigError line.

  An empty `data.lyrics_embeddings` is not an error here: tools/embed_lyrics.py loads this
  same config to make them. The model builder reports it (NO_LYRICS_MESSAGE).
  """
  if config.model.fusion not in FUSIONS:
    raise ConfigError(f"config key 'model.fusion' is {config.model.fusion!r}; expected one "
                      f"of {', '.join(FUSIONS)}")
  if config.objective.lyrics_loss not in LYRICS_LOSSES:
    raise ConfigError(f"config key 'objective.lyrics_loss' is "
                      f"{config.objective.lyrics_loss!r}; expected one of "
                      f"{', '.join(LYRICS_LOSSES)}")
  weight = config.model.lyrics_weight
  if not isinstance(weight, (int, float)) or weight < 0:
    raise ConfigError(f"config key 'model.lyrics_weight' is {weight!r}; expected a number >= 0")
