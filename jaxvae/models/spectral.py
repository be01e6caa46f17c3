"""The spectral MusicVAE's conv VAE and HarmonicVAE's MLP VAE.

Both follow the Gaussian VAE interface of `jaxvae.models.vae` (`encode(batch, train)`,
`decode(z, batch, train)`, `__call__(batch, train)` -> recon / mu / logvar / z), take the
compute `dtype` and return float32 outputs. Both are trained with the spectral MusicVAE's objective
(`jaxvae.variants.spectral.spectral_elbo`).
"""

from __future__ import annotations

from collections.abc import Sequence
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvae.audio import features
from jaxvae.data.spec import DataSpec
from jaxvae.models import layers


def _batch_norm(dtype) -> nn.BatchNorm:
  # PyTorch's defaults (momentum 0.1 there is 0.9 here), as in the seeds' originals.
  return nn.BatchNorm(momentum=0.9, epsilon=1e-5, dtype=dtype)


def _gelu(x: jax.Array) -> jax.Array:
  return nn.gelu(x, approximate=False)  # torch.nn.GELU's default, the exact erf form


# ----------------------------------------------------------------------------------------------
# The spectral MusicVAE: SpectralVAE
# ----------------------------------------------------------------------------------------------


class SpectralVAE(nn.Module):
  """3x3 stride-2 conv encoder (BN + GELU), dense posterior, mirrored transposed-conv decoder.

  The original spectral MusicVAE's sizes: channels (32, 64, 128, 256) on 128 x 259 (3 s, n_fft 1024,
  hop 256) -> a 256 x 8 x 17 map (each conv gives ceil(size / 2)); latent 16. The decoder starts
  from the same 8 x 17 grid and doubles it per transposed conv (128 x 272), then crops to the input:
  the encoder's ceil division makes the decoded grid at least as large as the input.
  """

  input_shape: tuple[int, int]
  channels: Sequence[int] = (32, 64, 128, 256)
  latent_dim: int = 16
  output_activation: str = "none"
  dtype: Any = jnp.float32
  conv_transpose: str = "auto"  # layers.ConvTranspose / layers.Conv impl

  def _grid(self) -> tuple[int, int]:
    n = len(self.channels)
    return tuple(math.ceil(s / 2**n) for s in self.input_shape)

  def setup(self):
    self.enc_convs = [
      layers.Conv(c, (3, 3), (2, 2), ((1, 1), (1, 1)), dtype=self.dtype, impl=self.conv_transpose)
      for c in self.channels
    ]
    self.enc_bns = [_batch_norm(self.dtype) for _ in self.channels]
    self.mu_head = nn.Dense(self.latent_dim, dtype=self.dtype)
    self.logvar_head = nn.Dense(self.latent_dim, dtype=self.dtype)
    grid = self._grid()
    self.dec_dense = nn.Dense(grid[0] * grid[1] * self.channels[-1], dtype=self.dtype)
    out_channels = list(self.channels[-2::-1]) + [1]
    # 'SAME' with stride 2 doubles the grid exactly (PyTorch: padding 1, output_padding 1).
    self.dec_convs = [
      layers.ConvTranspose(
        c, (3, 3), strides=(2, 2), padding="SAME", dtype=self.dtype, impl=self.conv_transpose
      )
      for c in out_channels
    ]
    self.dec_bns = [_batch_norm(self.dtype) for _ in out_channels[:-1]]

  def encode(self, batch, train: bool):
    x = batch["x"].astype(self.dtype)[..., None]
    for conv, bn in zip(self.enc_convs, self.enc_bns):
      x = _gelu(bn(conv(x), use_running_average=not train))
    h = x.reshape(x.shape[0], -1)
    return (self.mu_head(h).astype(jnp.float32), self.logvar_head(h).astype(jnp.float32))

  def decode(self, z, batch, train: bool):
    del batch  # unconditional; the argument keeps the VAE interface
    x = self.dec_dense(z.astype(self.dtype))
    x = x.reshape(z.shape[0], *self._grid(), self.channels[-1])
    for conv, bn in zip(self.dec_convs[:-1], self.dec_bns):
      x = _gelu(bn(conv(x), use_running_average=not train))
    x = self.dec_convs[-1](x)[..., 0].astype(jnp.float32)
    h, w = self.input_shape
    return layers.activate(x[:, :h, :w], self.output_activation)

  def __call__(self, batch, train: bool = False):
    mu, logvar = self.encode(batch, train)
    z = layers.reparameterize(self, mu, logvar)
    return {"recon": self.decode(z, batch, train), "mu": mu, "logvar": logvar, "z": z}


def build_spectral_vae(model_config, spec: DataSpec, dtype: str = "float32") -> SpectralVAE:
  return SpectralVAE(
    input_shape=tuple(spec.input_shape),
    channels=tuple(model_config.channels),
    latent_dim=model_config.latent_dim,
    output_activation=model_config.get("output_activation", "none"),
    conv_transpose=model_config.get("conv_transpose", "auto"),
    dtype=layers.compute_dtype(dtype),
  )


# ----------------------------------------------------------------------------------------------
# HarmonicVAE: consonance matrix, HarmonicLayer, HarmonicVAE
# ----------------------------------------------------------------------------------------------

# HarmonicVAE's just-intonation ratios (unison, fifth, fourth, major and minor third, major
# second, minor second); their inverses are added by `consonance_matrix`.
JUST_RATIOS = (1.0, 2 / 3, 3 / 4, 4 / 5, 5 / 6, 8 / 9, 15 / 16)


def mel_centres(n_mels: int, fmin: float = 0.0, fmax: float = 11025.0) -> np.ndarray:
  """Centre frequencies (Hz) of the `n_mels` slaney mel filters spanning [fmin, fmax].

  A filterbank of `n_mels` triangles has `n_mels + 2` edges evenly spaced in mels; the centres
  are the inner ones, so they are all > 0 even when fmin is 0.
  """
  return features.mel_frequencies(n_mels + 2, fmin, fmax)[1:-1]


def consonance_matrix(
  freqs: Sequence[float], ratios: Sequence[float] = JUST_RATIOS, sigma: float = 0.02
) -> np.ndarray:
  """`C[i, j] = max_r exp(-|log(f_i / f_j) - log(r)| / sigma)`, float32 `[D, D]`.

  r runs over `ratios` and their inverses, so C is symmetric, and the ratio 1 puts ones on the
  diagonal. `sigma` is in natural-log units of frequency ratio: 0.02 is about a third of an
  equal-tempered semitone (log 2 / 12 = 0.058), so an interval a semitone away from every
  listed ratio (a tritone, say) scores about exp(-0.06 / 0.02) = 0.05.
  """
  f = np.asarray(freqs, np.float64)
  if f.ndim != 1 or np.any(f <= 0):
    raise ValueError("consonance_matrix needs a 1-D array of positive frequencies")
  log_r = np.log(np.asarray(ratios, np.float64))
  log_r = np.concatenate([log_r, -log_r])
  log_ratio = np.log(f)[:, None] - np.log(f)[None, :]
  distance = np.min(np.abs(log_ratio[..., None] - log_r), axis=-1)
  return np.exp(-distance / sigma).astype(np.float32)


class HarmonicLayer(nn.Module):
  """A dense layer plus a term that mixes inputs whose frequencies form consonant intervals.

  Input `h` `[..., D]`, where input unit i is associated with the frequency `f_i` (given in
  `freqs`, or the i-th mel centre of `n_mels` filters over [fmin, fmax]). Output `[..., features]`:

      Dense(h) + alpha * (h @ C) @ W2

  `C` (`consonance_matrix(f)`, fixed, not learned) first spreads each unit's activation to the
  units a just interval away (fifth, fourth, thirds, ...), `W2` (`[D, features]`, no bias) maps
  that to the output, and `alpha` (a learned scalar, init 0.1) sets how much this harmonic
  pathway counts. HarmonicVAE's idea: energy at f and at 3/2 f are evidence for the same
  note or chord, so the layer gets their sum as a feature without having to learn which mel
  rows are related. With alpha = 0 the layer is exactly its Dense part.
  """

  features: int
  freqs: Sequence[float] | None = None
  n_mels: int = 0
  fmin: float = 0.0
  fmax: float = 11025.0
  sigma: float = 0.02
  alpha_init: float = 0.1
  dtype: Any = jnp.float32

  def frequencies(self) -> np.ndarray:
    if self.freqs is not None:
      return np.asarray(self.freqs, np.float64)
    if self.n_mels <= 0:
      raise ValueError("HarmonicLayer needs `freqs` or a positive `n_mels`")
    return mel_centres(self.n_mels, self.fmin, self.fmax)

  @nn.compact
  def __call__(self, h: jax.Array) -> jax.Array:
    freqs = self.frequencies()
    if h.shape[-1] != len(freqs):
      raise ValueError(f"HarmonicLayer: input has {h.shape[-1]} units but {len(freqs)} frequencies")
    h = h.astype(self.dtype)
    consonance = jnp.asarray(consonance_matrix(freqs, sigma=self.sigma), self.dtype)
    alpha = self.param("alpha", nn.initializers.constant(self.alpha_init), (), jnp.float32)
    dense = nn.Dense(self.features, dtype=self.dtype, name="dense")(h)
    harmonic = nn.Dense(self.features, use_bias=False, dtype=self.dtype, name="harmonic")(
      h @ consonance
    )
    return dense + alpha.astype(self.dtype) * harmonic


class HarmonicVAE(nn.Module):
  """HarmonicVAE's MLP VAE on the flattened spectrogram, optionally with a HarmonicLayer first.

  The original HarmonicVAE's sizes: 128 x 173 (4 s at 22,050 Hz, hop 512) -> hidden (1024,
  512, 256) with ReLU -> latent 128 -> (256, 512, 1024) -> 128 x 173, sigmoid output (inputs
  are per-clip min-max scaled to [0, 1]). `batch_norm` and `dropout` follow each hidden Dense
  when enabled.

  `harmonic=True` adds a HarmonicLayer before the MLP, acting along the mel axis: each frame's
  n_mels vector goes through the same HarmonicLayer (n_mels -> n_mels, mel-centre frequencies
  over [fmin, fmax]) and a ReLU, and the result is flattened into the MLP. Sharing the layer
  over frames keeps it small (about 2 n_mels^2 weights) and makes it a property of pitch
  relations, not of a time position.
  """

  input_shape: tuple[int, int]
  hidden: Sequence[int] = (1024, 512, 256)
  latent_dim: int = 128
  dropout: float = 0.0
  batch_norm: bool = False
  harmonic: bool = False
  harmonic_sigma: float = 0.02
  fmin: float = 0.0
  fmax: float = 11025.0
  output_activation: str = "sigmoid"
  dtype: Any = jnp.float32

  def setup(self):
    self.enc = [nn.Dense(h, dtype=self.dtype) for h in self.hidden]
    self.mu_head = nn.Dense(self.latent_dim, dtype=self.dtype)
    self.logvar_head = nn.Dense(self.latent_dim, dtype=self.dtype)
    self.dec = [nn.Dense(h, dtype=self.dtype) for h in self.hidden[::-1]]
    self.out = nn.Dense(self.input_shape[0] * self.input_shape[1], dtype=self.dtype)
    if self.batch_norm:
      self.enc_bns = [_batch_norm(self.dtype) for _ in self.hidden]
      self.dec_bns = [_batch_norm(self.dtype) for _ in self.hidden]
    self.drop = nn.Dropout(self.dropout)
    if self.harmonic:
      n_mels = self.input_shape[0]
      self.harmonic_layer = HarmonicLayer(
        n_mels,
        n_mels=n_mels,
        fmin=self.fmin,
        fmax=self.fmax,
        sigma=self.harmonic_sigma,
        dtype=self.dtype,
      )

  def _mlp(self, h, layers, bns, train):
    for i, dense in enumerate(layers):
      h = dense(h)
      if self.batch_norm:
        h = bns[i](h, use_running_average=not train)
      h = self.drop(nn.relu(h), deterministic=not train)
    return h

  def encode(self, batch, train: bool):
    x = batch["x"].astype(self.dtype)
    if self.harmonic:
      # [B, F, T] -> per-frame mel vectors [B, T, F] -> HarmonicLayer on the mel axis.
      x = nn.relu(self.harmonic_layer(jnp.swapaxes(x, 1, 2)))
    h = self._mlp(
      x.reshape(x.shape[0], -1), self.enc, self.enc_bns if self.batch_norm else None, train
    )
    return (self.mu_head(h).astype(jnp.float32), self.logvar_head(h).astype(jnp.float32))

  def decode(self, z, batch, train: bool):
    del batch  # unconditional; the argument keeps the VAE interface
    h = self._mlp(z.astype(self.dtype), self.dec, self.dec_bns if self.batch_norm else None, train)
    x = self.out(h).reshape(z.shape[0], *self.input_shape)
    return layers.activate(x.astype(jnp.float32), self.output_activation)

  def __call__(self, batch, train: bool = False):
    mu, logvar = self.encode(batch, train)
    z = layers.reparameterize(self, mu, logvar)
    return {"recon": self.decode(z, batch, train), "mu": mu, "logvar": logvar, "z": z}


def build_harmonic_vae(model_config, spec: DataSpec, dtype: str = "float32") -> HarmonicVAE:
  return HarmonicVAE(
    input_shape=tuple(spec.input_shape),
    hidden=tuple(model_config.hidden),
    latent_dim=model_config.latent_dim,
    dropout=model_config.dropout,
    harmonic=model_config.harmonic,
    batch_norm=model_config.get("batch_norm", False),
    harmonic_sigma=model_config.get("harmonic_sigma", 0.02),
    fmin=model_config.get("fmin", 0.0),
    fmax=model_config.get("fmax", 11025.0),
    output_activation=model_config.get("output_activation", "sigmoid"),
    dtype=layers.compute_dtype(dtype),
  )
