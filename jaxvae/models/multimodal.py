"""Multimodal VAE: one latent for a clip's audio (log-mel) and its lyrics embedding.

The original music VAE family's "multimodal" run never fed the lyrics to the model; here they reach
the latent through their own encoder and a fusion of the two modalities, and the latent must explain
both (it decodes the spectrogram and the lyrics embedding). Audio tells genre far better
than language, lyrics tell language: a latent that fuses them should cluster by both.

  audio  x [B, H, W] -> ConvVAE's encoder (4x4 stride-2 convs + BN + LeakyReLU 0.2) -> h_a
  lyrics l [B, D]    -> MLP (Dense + LayerNorm + GELU per hidden layer)              -> h_l
  fusion (model.fusion):
    'concat'     [h_a, h_l masked, lyrics_mask] -> dense mu / logvar
    'poe'        audio expert (mu_a, logvar_a), lyrics expert (mu_l, logvar_l) and a N(0, I)
                 prior expert multiplied; a clip without lyrics has no lyrics expert
    'attention'  a learned query attends over the audio and lyrics tokens (the lyrics token
                 is a padded key for clips without lyrics) -> dense mu / logvar
    'split'      private subspaces: the audio sets latent_dim - lyrics_latent_dim dimensions,
                 the lyrics the last lyrics_latent_dim (the prior N(0, I) there for clips
                 without lyrics); both decoders read all of z. How much of the latent the
                 lyrics can take is fixed by the architecture, not by a loss weight.
  z -> ConvVAE's decoder -> recon [B, H, W];  z -> MLP -> lyrics_recon [B, D]

Modality dropout (`model.lyrics_dropout`, training only): each clip with lyrics is encoded,
with that probability, as if it had none, while the objective still asks z to reconstruct its
lyrics, so the audio path learns to stand alone (MVAE trains its unimodal posteriors for the
same end).

Lyrics from the audio (`model.lyrics_from_audio`, 'split' only): a third encoder,
q(z_lyrics | audio) = MLP(h_a) -> Gaussian, gives the lyrics dimensions of a clip that has no
lyrics (instead of the prior). The objective trains it to match the lyrics' own posterior
(JMVAE-kl's alignment of a unimodal encoder with the joint one), so lyrics decoded from the
audio alone carry what the audio can tell of them, while the joint latent of a clip with
lyrics is computed exactly as without it.

Clips without lyrics (`lyrics_mask` 0) are kept: in every fusion their lyrics vector cannot
change the posterior (the tests check that two different vectors give identical outputs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvae.data.spec import DataSpec
from jaxvae.models import layers
from jaxvae.models.vae import ConvVAE

FUSIONS = ("concat", "poe", "attention", "split")
LYRICS_LATENT_DIM = 4  # 'split': the lyrics' private dimensions when the config names none

NO_LYRICS_MESSAGE = (
  "multimodal_vae needs lyrics embeddings: set config key "
  "data.lyrics_embeddings (make them with tools/embed_lyrics.py)"
)


class MLP(nn.Module):
  """Dense + LayerNorm + GELU per hidden layer, then an optional linear output layer.

  LayerNorm rather than BatchNorm: a batch can hold only a few clips with lyrics, and
  per-example normalization also absorbs the arbitrary scale of a text encoder's vectors.
  """

  hidden: Sequence[int]
  out_features: int = 0  # 0: no output layer (an encoder's features).
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h: jax.Array) -> jax.Array:
    h = h.astype(self.dtype)
    for width in self.hidden:
      h = nn.gelu(nn.LayerNorm(dtype=self.dtype)(nn.Dense(width, dtype=self.dtype)(h)))
    if self.out_features:
      h = nn.Dense(self.out_features, dtype=self.dtype)(h)
    return h


class GaussianHead(nn.Module):
  """Features -> (mu, logvar) of a diagonal Gaussian, float32 (the KL is taken in float32)."""

  latent_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h: jax.Array) -> tuple[jax.Array, jax.Array]:
    mu = nn.Dense(self.latent_dim, dtype=self.dtype, name="mu")(h)
    logvar = nn.Dense(self.latent_dim, dtype=self.dtype, name="logvar")(h)
    return mu.astype(jnp.float32), logvar.astype(jnp.float32)


def product_of_experts(
  mus: Sequence[jax.Array], logvars: Sequence[jax.Array], present: Sequence[jax.Array]
) -> tuple[jax.Array, jax.Array]:
  """Product of N(0, I) with the diagonal Gaussian experts whose `present` flag is 1.

  present: one [B] array per expert; an absent expert gets precision exactly 0 (its
  log-precision is -inf), so the product is then exactly that of the others.
  Precision T = 1 + sum_k exp(-logvar_k); mu = sum_k exp(-logvar_k) mu_k / T. Computed as a
  softmax over log-precisions (the prior's is 0) so that no exp(-logvar) can overflow.
  """
  log_prec = [jnp.zeros_like(mus[0])]
  for logvar, p in zip(logvars, present):
    log_prec.append(jnp.where(p[:, None] > 0, -logvar.astype(jnp.float32), -jnp.inf))
  log_prec = jnp.stack(log_prec)  # [1 + K, B, L]
  weights = jax.nn.softmax(log_prec, axis=0)[1:]  # the prior's mean is 0: its term drops.
  mu = sum(w * m.astype(jnp.float32) for w, m in zip(weights, mus))
  return mu, -jax.nn.logsumexp(log_prec, axis=0)


class AttentionFusion(nn.Module):
  """A learned query attends over [audio token, lyrics token]; missing lyrics are a padded
  key, so their attention weight is exactly 0. Returns the fused [B, dim] feature."""

  dim: int = 256
  heads: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h_audio: jax.Array, h_lyrics: jax.Array, has_lyrics: jax.Array):
    tokens = jnp.stack(
      [
        nn.Dense(self.dim, dtype=self.dtype, name="audio_token")(h_audio),
        nn.Dense(self.dim, dtype=self.dtype, name="lyrics_token")(h_lyrics),
      ],
      axis=1,
    )
    tokens = nn.LayerNorm(dtype=self.dtype)(tokens)
    query = self.param("query", nn.initializers.normal(0.02), (1, 1, self.dim))
    query = jnp.broadcast_to(query, (h_audio.shape[0], 1, self.dim)).astype(self.dtype)
    # [B, heads, q=1, kv=2]: the audio key is always there, the lyrics key only with lyrics.
    keep = jnp.stack([jnp.ones_like(has_lyrics, bool), has_lyrics > 0], axis=-1)
    attended = nn.MultiHeadDotProductAttention(
      num_heads=self.heads, qkv_features=self.dim, dtype=self.dtype
    )(query, tokens, tokens, mask=keep[:, None, None, :])
    return nn.LayerNorm(dtype=self.dtype)(query + attended)[:, 0]


class MultimodalVAE(nn.Module):
  """Audio + lyrics-embedding VAE with a configurable fusion (see the module docstring).

  Seed sizes: channels (16, 32, 64) on 128 x 1292, latent 128, lyrics_dim 768 (XLM-R).
  Outputs of `__call__`: recon [B, H, W], lyrics_recon [B, D], mu, logvar, z [B, latent]
  (float32); 'poe' adds mu_audio, logvar_audio, mu_lyrics, logvar_lyrics; 'split' with
  lyrics_from_audio adds mu_lyrics, logvar_lyrics (from the lyrics), mu_lyrics_from_audio,
  logvar_lyrics_from_audio and lyrics_present (the lyrics mask the encoder read).
  """

  input_shape: tuple[int, int]
  lyrics_dim: int
  channels: Sequence[int] = (16, 32, 64)
  latent_dim: int = 128
  lyrics_hidden: Sequence[int] = (256,)
  fusion: str = "concat"
  attention_dim: int = 256
  attention_heads: int = 4
  lyrics_latent_dim: int = LYRICS_LATENT_DIM  # 'split' only: the lyrics' private dimensions
  # Training only: each clip with lyrics is encoded from the audio alone with this
  # probability (modality dropout); its lyrics are still reconstructed from z.
  lyrics_dropout: float = 0.0
  # 'split' only: a clip without lyrics takes its lyrics dimensions from q(z_lyrics | audio),
  # an encoder of the audio features trained to match the lyrics' posterior (the objective's
  # alignment term), instead of the prior N(0, I).
  lyrics_from_audio: bool = False
  output_activation: str = "none"
  dtype: Any = jnp.float32
  conv_transpose: str = "auto"

  def setup(self):
    if self.fusion not in FUSIONS:
      raise ValueError(
        f"config key 'model.fusion' is {self.fusion!r}; expected one of {', '.join(FUSIONS)}"
      )
    # The audio side is ConvVAE's conv stacks (its `features` / `decode_features`; its
    # Gaussian heads are never called, so they hold no parameters here).
    self.audio = ConvVAE(
      input_shape=tuple(self.input_shape),
      channels=tuple(self.channels),
      latent_dim=self.latent_dim,
      output_activation=self.output_activation,
      dtype=self.dtype,
      conv_transpose=self.conv_transpose,
    )
    self.lyrics_encoder = MLP(self.lyrics_hidden, dtype=self.dtype)
    if self.fusion == "poe":
      self.audio_head = GaussianHead(self.latent_dim, self.dtype)
      self.lyrics_head = GaussianHead(self.latent_dim, self.dtype)
    elif self.fusion == "split":
      if not 0 < self.lyrics_latent_dim < self.latent_dim:
        raise ValueError(
          f"config key 'model.lyrics_latent_dim' is {self.lyrics_latent_dim}; expected 1 to "
          f"latent_dim - 1 = {self.latent_dim - 1}"
        )
      self.audio_head = GaussianHead(self.latent_dim - self.lyrics_latent_dim, self.dtype)
      self.lyrics_head = GaussianHead(self.lyrics_latent_dim, self.dtype)
      if self.lyrics_from_audio:
        self.cross_encoder = MLP(self.lyrics_hidden, dtype=self.dtype)
        self.cross_head = GaussianHead(self.lyrics_latent_dim, self.dtype)
    elif self.lyrics_from_audio:
      raise ValueError(
        f"config key 'model.lyrics_from_audio' needs model.fusion 'split'; it is {self.fusion!r}"
      )
    else:
      self.head = GaussianHead(self.latent_dim, self.dtype)
    if self.fusion == "attention":
      self.attention = AttentionFusion(self.attention_dim, self.attention_heads, self.dtype)
    self.lyrics_decoder = MLP(tuple(self.lyrics_hidden)[::-1], self.lyrics_dim, self.dtype)

  def _lyrics(self, batch) -> tuple[jax.Array, jax.Array]:
    """(lyrics [B, D], has_lyrics [B]); a batch without a mask has lyrics for every clip."""
    if "lyrics" not in batch:
      raise ValueError("the batch has no 'lyrics': " + NO_LYRICS_MESSAGE)
    lyrics = batch["lyrics"]
    if lyrics.ndim != 2 or lyrics.shape[-1] != self.lyrics_dim:
      raise ValueError(
        f"batch['lyrics'] has shape {lyrics.shape}; the model expects "
        f"[batch, {self.lyrics_dim}] (config key data.lyrics_embeddings must "
        "name embeddings from the text encoder the model was built for)"
      )
    mask = batch.get("lyrics_mask")
    if mask is None:
      mask = jnp.ones(lyrics.shape[:1], jnp.float32)
    return lyrics, mask.astype(jnp.float32)

  def posterior(self, batch, train: bool) -> dict[str, jax.Array]:
    """mu and logvar of q(z | audio, lyrics), plus each expert's for 'poe'."""
    lyrics, has = self._lyrics(batch)
    h_audio = self.audio.features(batch["x"], train)
    # Zeroed with where (not a product) on the way in and out: whatever a clip without lyrics
    # holds (zeros, stale values, NaN) reaches neither the encoder nor the fusion.
    present = has[:, None] > 0
    h_lyrics = jnp.where(present, self.lyrics_encoder(jnp.where(present, lyrics, 0.0)), 0.0)
    if self.fusion == "poe":
      mu_a, logvar_a = self.audio_head(h_audio)
      mu_l, logvar_l = self.lyrics_head(h_lyrics)
      mu, logvar = product_of_experts([mu_a, mu_l], [logvar_a, logvar_l], [jnp.ones_like(has), has])
      return {
        "mu": mu,
        "logvar": logvar,
        "mu_audio": mu_a,
        "logvar_audio": logvar_a,
        "mu_lyrics": mu_l,
        "logvar_lyrics": logvar_l,
      }
    if self.fusion == "split":
      return self._split(h_audio, h_lyrics, has)
    if self.fusion == "attention":
      fused = self.attention(h_audio, h_lyrics, has)
    else:
      # The mask as a feature lets the head tell "no lyrics" from lyrics that encode to 0.
      fused = jnp.concatenate([h_audio, h_lyrics, has[:, None].astype(h_audio.dtype)], -1)
    mu, logvar = self.head(fused)
    return {"mu": mu, "logvar": logvar}

  def _split(self, h_audio, h_lyrics, has) -> dict[str, jax.Array]:
    """The 'split' posterior: the audio's dimensions, then the lyrics' (from the lyrics; for
    a clip without them the prior N(0, I), or q(z_lyrics | audio) with lyrics_from_audio,
    whose outputs are then returned too for the objective's alignment term)."""
    present = has[:, None] > 0
    mu_a, logvar_a = self.audio_head(h_audio)
    mu_l, logvar_l = self.lyrics_head(h_lyrics)
    out = {}
    fill_mu = fill_logvar = jnp.zeros_like(mu_l)
    if self.lyrics_from_audio:
      # It reads the audio features, which get its gradient too (measured against stopping
      # that gradient and against reading the audio dimensions' mean: BUILD_NOTES.md).
      fill_mu, fill_logvar = self.cross_head(self.cross_encoder(h_audio))
      out = {
        "mu_lyrics": mu_l,
        "logvar_lyrics": logvar_l,
        "mu_lyrics_from_audio": fill_mu,
        "logvar_lyrics_from_audio": fill_logvar,
        "lyrics_present": has,
      }
    mu_l = jnp.where(present, mu_l, fill_mu)
    logvar_l = jnp.where(present, logvar_l, fill_logvar)
    return out | {
      "mu": jnp.concatenate([mu_a, mu_l], -1),
      "logvar": jnp.concatenate([logvar_a, logvar_l], -1),
    }

  def encode(self, batch, train: bool) -> tuple[jax.Array, jax.Array]:
    """(mu, logvar) of the fused posterior, like ConvVAE.encode."""
    post = self.posterior(batch, train)
    return post["mu"], post["logvar"]

  def decode(self, z: jax.Array, batch=None, train: bool = False) -> jax.Array:
    """z -> the audio reconstruction, like ConvVAE.decode (`batch` is not needed)."""
    del batch
    return self.audio.decode_features(z, train)

  def decode_lyrics(self, z: jax.Array) -> jax.Array:
    """z -> the lyrics embedding [B, lyrics_dim], float32."""
    return self.lyrics_decoder(z).astype(jnp.float32)

  def __call__(self, batch, train: bool = False) -> dict[str, jax.Array]:
    if train and self.lyrics_dropout > 0:
      _, has = self._lyrics(batch)
      keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.lyrics_dropout, has.shape)
      batch = {**batch, "lyrics_mask": has * keep}
    post = self.posterior(batch, train)
    z = layers.reparameterize(self, post["mu"], post["logvar"])
    return {
      **post,
      "z": z,
      "recon": self.decode(z, batch, train),
      "lyrics_recon": self.decode_lyrics(z),
    }


def build_multimodal_vae(model_config, spec: DataSpec, dtype: str = "float32") -> MultimodalVAE:
  """Registry builder: `model.{channels, latent_dim, lyrics_hidden, fusion,
  output_activation}` (+ optional `attention_dim`, `attention_heads`, `lyrics_latent_dim`,
  `lyrics_dropout`, `lyrics_from_audio`); `model.lyrics_weight` and
  `model.lyrics_from_audio_weight` are read by the objective."""
  if not spec.lyrics_dim:
    raise ValueError(NO_LYRICS_MESSAGE)
  fusion = model_config.get("fusion", "concat")
  if fusion not in FUSIONS:
    raise ValueError(
      f"config key 'model.fusion' is {fusion!r}; expected one of {', '.join(FUSIONS)}"
    )
  return MultimodalVAE(
    input_shape=tuple(spec.input_shape),
    lyrics_dim=spec.lyrics_dim,
    channels=tuple(model_config.channels),
    latent_dim=model_config.latent_dim,
    lyrics_hidden=tuple(model_config.get("lyrics_hidden", (256,))),
    fusion=fusion,
    attention_dim=model_config.get("attention_dim", 256),
    attention_heads=model_config.get("attention_heads", 4),
    lyrics_latent_dim=model_config.get("lyrics_latent_dim", LYRICS_LATENT_DIM),
    lyrics_dropout=float(model_config.get("lyrics_dropout", 0.0)),
    lyrics_from_audio=bool(model_config.get("lyrics_from_audio", False)),
    output_activation=model_config.get("output_activation", "none"),
    conv_transpose=model_config.get("conv_transpose", "auto"),
    dtype=layers.compute_dtype(dtype),
  )
