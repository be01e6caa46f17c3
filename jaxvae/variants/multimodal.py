"""The multimodal VAE (audio + lyrics embedding) as a variant: builder, objective, checks.

  loss = recon + lyrics_term + kl_weight * KL(q(z | audio, lyrics) || N(0, I))   (free bits)
         [+ model.lyrics_from_audio_weight * KL(q(z_lyrics | lyrics) || q(z_lyrics | audio))]
  recon       = per-example audio reconstruction, summed over bins (`reconstruction.nll`)
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

from jaxvae.data.spec import DataSpec
from jaxvae.errors import ConfigError
from jaxvae.losses import divergence
from jaxvae.losses import reconstruction
from jaxvae.losses import reduce
from jaxvae.models import multimodal
from jaxvae.variants import audio_vae
from jaxvae.variants.base import Variant

LYRICS_LOSSES = reconstruction.EMBEDDING_DISTANCES


def build(model_config, spec: DataSpec, dtype: str = "float32") -> multimodal.MultimodalVAE:
  """`multimodal.build_multimodal_vae`, its mistakes (no lyrics embeddings, an unknown fusion)
  reported as the ConfigError they are at run time."""
  try:
    return multimodal.build_multimodal_vae(model_config, spec, dtype)
  except ValueError as e:
    raise ConfigError(str(e)) from None


def lyrics_balance(kind: str, n_audio: int, lyrics_dim: int) -> float:
  """Scale that puts the lyrics distance on the audio term's footing (module docstring)."""
  return float(n_audio) if kind == "cosine" else n_audio / lyrics_dim


def _lyrics_mask(batch) -> jax.Array:
  mask = batch.get("lyrics_mask")
  if mask is None:
    return jnp.ones(batch["lyrics"].shape[:1], jnp.float32)
  return mask.astype(jnp.float32)


def objective(outputs, batch, *, kl_weight, config):
  """Negative multimodal ELBO (plus the alignment term with lyrics_from_audio, which
  validation and early stopping then count too); metrics are batch means over real clips
  (`batch['mask']`).

  Metrics: loss, recon (audio), lyrics_recon (the raw lyrics distance, mean over clips that
  have lyrics), lyrics_term (what the lyrics add to the loss), kl, recon_mse (per bin),
  kl_weight; with lyrics_from_audio also lyrics_from_audio_kl (`_alignment`, unweighted).
  """
  kind = config.objective.get("lyrics_loss", "cosine")
  mask = batch["mask"]
  recon, mse = audio_vae.recon_terms(outputs, batch, config)
  has = _lyrics_mask(batch) * mask.astype(jnp.float32)
  # where, not a product, on the way in and out: whatever a clip without lyrics (or batch
  # padding) holds or is predicted must reach neither the loss nor its gradient, not even
  # as a NaN (a NaN input behind an outer where alone still makes the gradient NaN).
  read = lambda v: jnp.where(has[:, None] > 0, v, 0.0)
  distance = jnp.where(
    has > 0,
    reconstruction.embedding_distance(read(outputs["lyrics_recon"]), read(batch["lyrics"]), kind),
    0.0,
  )
  balance = lyrics_balance(kind, batch["x"][0].size, batch["lyrics"].shape[-1])
  lyrics_term = (config.model.lyrics_weight * balance) * reduce.masked_mean(distance, mask)
  kl_penalized, kl = divergence.free_bits_kl(
    outputs["mu"], outputs["logvar"], mask, config.kl.free_bits
  )
  loss = recon + lyrics_term + kl_weight * kl_penalized
  metrics = {}
  if "mu_lyrics_from_audio" in outputs:
    alignment = _alignment(outputs, mask)
    loss = loss + config.model.get("lyrics_from_audio_weight", 1.0) * alignment
    metrics["lyrics_from_audio_kl"] = alignment
  return loss, metrics | {
    "loss": loss,
    "recon": recon,
    "lyrics_recon": reduce.masked_mean(distance, has),
    "lyrics_term": lyrics_term,
    "kl": kl,
    "recon_mse": mse,
    "kl_weight": jnp.asarray(kl_weight, jnp.float32),
  }


def _alignment(outputs, mask) -> jax.Array:
  """KL(q(z_lyrics | lyrics) || q(z_lyrics | audio)), summed over the lyrics dimensions and
  averaged over the real clips whose lyrics the model read. The lyrics' posterior is held
  fixed (stop_gradient): the audio is taught to predict it, the lyrics' own dimensions are
  not pulled towards what the audio can tell (as JMVAE-kl trains its unimodal encoders)."""
  read = outputs["lyrics_present"].astype(jnp.float32) * mask.astype(jnp.float32)
  # The rows not read are zeroed on the way in (not only their KL on the way out): an
  # overflow there would still make the gradient NaN through the where.
  keep = lambda k: jnp.where(read[:, None] > 0, outputs[k], 0.0)
  target = [jax.lax.stop_gradient(keep(k)) for k in ("mu_lyrics", "logvar_lyrics")]
  kl = divergence.gaussian_kl_between(
    *target, keep("mu_lyrics_from_audio"), keep("logvar_lyrics_from_audio")
  ).sum(-1)
  return reduce.masked_mean(jnp.where(read > 0, kl, 0.0), read)


def validate(config) -> None:
  """The multimodal config keys, each mistake as one ConfigError line.

  An empty `data.lyrics_embeddings` is not an error here: tools/embed_lyrics.py loads this
  same config to make them. The builder reports it (`multimodal.NO_LYRICS_MESSAGE`).
  """
  if config.model.fusion not in multimodal.FUSIONS:
    raise ConfigError(
      f"config key 'model.fusion' is {config.model.fusion!r}; expected one "
      f"of {', '.join(multimodal.FUSIONS)}"
    )
  if config.objective.lyrics_loss not in LYRICS_LOSSES:
    raise ConfigError(
      f"config key 'objective.lyrics_loss' is "
      f"{config.objective.lyrics_loss!r}; expected one of "
      f"{', '.join(LYRICS_LOSSES)}"
    )
  if config.model.fusion == "split":
    dims, latent = (
      config.model.get("lyrics_latent_dim", multimodal.LYRICS_LATENT_DIM),
      config.model.latent_dim,
    )
    if not isinstance(dims, int) or not 0 < dims < latent:
      raise ConfigError(
        f"config key 'model.lyrics_latent_dim' is {dims!r}; expected an integer from 1 to "
        f"model.latent_dim - 1 = {latent - 1}"
      )
  weights = {
    "lyrics_weight": config.model.lyrics_weight,
    "lyrics_from_audio_weight": config.model.get("lyrics_from_audio_weight", 1.0),
  }
  for key, weight in weights.items():
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
      raise ConfigError(f"config key 'model.{key}' is {weight!r}; expected a number >= 0")
  cross = config.model.get("lyrics_from_audio", False)
  if not isinstance(cross, bool):
    raise ConfigError(f"config key 'model.lyrics_from_audio' is {cross!r}; expected True or False")
  if cross and config.model.fusion != "split":
    raise ConfigError(
      f"config key 'model.lyrics_from_audio' needs model.fusion 'split'; it is "
      f"{config.model.fusion!r}"
    )
  drop = config.model.get("lyrics_dropout", 0.0)
  if not isinstance(drop, (int, float)) or not 0.0 <= drop < 1.0:
    # 1 would never train the lyrics path that evaluation reads.
    raise ConfigError(
      f"config key 'model.lyrics_dropout' is {drop!r}; expected a fraction in [0, 1)"
    )


def latent_parts(config) -> dict[str, tuple[int, int]]:
  """'split': the audio's dimensions come first, the lyrics' last lyrics_latent_dim; each
  part is inferred from its own input alone (for a clip without lyrics, the lyrics part from
  its audio with lyrics_from_audio). The other fusions mix both inputs in every dimension:
  no parts."""
  if config.model.fusion != "split":
    return {}
  latent = config.model.latent_dim
  lyrics = config.model.get("lyrics_latent_dim", multimodal.LYRICS_LATENT_DIM)
  return {"audio": (0, latent - lyrics), "lyrics": (latent - lyrics, latent)}


VARIANT = Variant(
  build,
  objective,
  validate=validate,
  likelihood=audio_vae.recon_likelihood,
  latent_parts=latent_parts,
  outputs=("features", "lyrics"),
)
