"""Gaussian VAEs on spectrograms: the fully connected and the convolutional family.

Both take an optional label to condition on (the music VAE family's CVAE): the label's embedding is
joined to the encoder features before the posterior heads and to z before the decoder.
A beta-VAE is the conv VAE with a larger KL weight: it differs only in its config.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvae.data.spec import DataSpec
from jaxvae.models import layers

# BatchNorm below uses PyTorch's defaults (momentum 0.1 there is 0.9 here) so seed-size
# models behave like the originals.


class LabelEmbed(nn.Module):
  """Embeds an int label; -1 (unknown) gets its own learned row rather than a wrong class."""

  num_classes: int
  features: int

  @nn.compact
  def __call__(self, label: jax.Array) -> jax.Array:
    index = jnp.where(label < 0, self.num_classes, label)
    return nn.Embed(self.num_classes + 1, self.features)(index)


class ConvVAE(nn.Module):
  """Strided 4x4 conv encoder (BN + LeakyReLU 0.2), dense posterior, mirrored decoder.

  The original's sizes: channels (16, 32, 64) on 128 x 1292 -> a 64 x 16 x 161 map; latent 128.
  The decoder mirrors the encoder's grid (floor(size / 8)); when the input is not a multiple
  of 8 (1292 frames -> 1288) the last map is resized to the input, as the original did.
  """

  input_shape: tuple[int, int]
  channels: Sequence[int] = (16, 32, 64)
  latent_dim: int = 128
  cond_label: str = ""
  num_classes: int = 0
  cond_dim: int = 32
  output_activation: str = "none"
  dtype: Any = jnp.float32
  conv_transpose: str = "auto"  # layers.ConvTranspose / layers.Conv impl

  def setup(self):
    n = len(self.channels)
    self.enc_convs = [
      layers.Conv(c, (4, 4), (2, 2), ((1, 1), (1, 1)), dtype=self.dtype, impl=self.conv_transpose)
      for c in self.channels
    ]
    self.enc_bns = [
      nn.BatchNorm(momentum=0.9, epsilon=1e-5, dtype=self.dtype) for _ in self.channels
    ]
    self.mu_head = nn.Dense(self.latent_dim, dtype=self.dtype)
    self.logvar_head = nn.Dense(self.latent_dim, dtype=self.dtype)
    h, w = self.input_shape
    self.dec_grid = (h // 2**n, w // 2**n)
    self.dec_dense = nn.Dense(
      self.dec_grid[0] * self.dec_grid[1] * self.channels[-1], dtype=self.dtype
    )
    out_channels = list(self.channels[-2::-1]) + [1]
    self.dec_convs = [
      layers.ConvTranspose(
        c, (4, 4), strides=(2, 2), padding="SAME", dtype=self.dtype, impl=self.conv_transpose
      )
      for c in out_channels
    ]
    self.dec_bns = [
      nn.BatchNorm(momentum=0.9, epsilon=1e-5, dtype=self.dtype) for _ in out_channels[:-1]
    ]
    if self.cond_label:
      self.embed = LabelEmbed(self.num_classes, self.cond_dim)

  def features(self, x, train: bool):
    """The conv stack: [B, H, W] -> flattened features [B, C * H/2^n * W/2^n]."""
    x = x.astype(self.dtype)[..., None]
    for conv, bn in zip(self.enc_convs, self.enc_bns):
      x = nn.leaky_relu(bn(conv(x), use_running_average=not train), 0.2)
    return x.reshape(x.shape[0], -1)

  def decode_features(self, h, train: bool):
    """The mirrored transposed-conv stack: [B, any] (z, or z with a condition) -> [B, H, W]."""
    x = self.dec_dense(h.astype(self.dtype)).reshape(h.shape[0], *self.dec_grid, self.channels[-1])
    for conv, bn in zip(self.dec_convs[:-1], self.dec_bns):
      x = nn.leaky_relu(bn(conv(x), use_running_average=not train), 0.2)
    x = self.dec_convs[-1](x)[..., 0]
    x = x.astype(jnp.float32)
    if x.shape[1:] != tuple(self.input_shape):
      x = jax.image.resize(x, (x.shape[0], *self.input_shape), "bilinear")
    return layers.activate(x, self.output_activation)

  def encode(self, batch, train: bool):
    h = self.features(batch["x"], train)
    h = with_label(self, h, batch)
    return (self.mu_head(h).astype(jnp.float32), self.logvar_head(h).astype(jnp.float32))

  def decode(self, z, batch, train: bool):
    z = with_label(self, z.astype(self.dtype), batch)
    return self.decode_features(z, train)

  def __call__(self, batch, train: bool = False):
    mu, logvar = self.encode(batch, train)
    z = layers.reparameterize(self, mu, logvar)
    return {"recon": self.decode(z, batch, train), "mu": mu, "logvar": logvar, "z": z}


class BasicVAE(nn.Module):
  """Fully connected VAE on the flattened spectrogram (BN, ReLU, dropout).

  The original's sizes: 165,376 -> 16 -> 32 -> 64 -> latent 128, mirrored decoder (~5.49 M params).
  """

  input_shape: tuple[int, int]
  hidden: Sequence[int] = (16, 32, 64)
  latent_dim: int = 128
  dropout: float = 0.1
  cond_label: str = ""
  num_classes: int = 0
  cond_dim: int = 32
  output_activation: str = "none"
  dtype: Any = jnp.float32

  def setup(self):
    self.enc = [nn.Dense(h, dtype=self.dtype) for h in self.hidden]
    self.enc_bns = [nn.BatchNorm(momentum=0.9, epsilon=1e-5, dtype=self.dtype) for _ in self.hidden]
    self.mu_head = nn.Dense(self.latent_dim, dtype=self.dtype)
    self.logvar_head = nn.Dense(self.latent_dim, dtype=self.dtype)
    rev = list(self.hidden[::-1])
    self.dec = [nn.Dense(h, dtype=self.dtype) for h in rev]
    self.dec_bns = [nn.BatchNorm(momentum=0.9, epsilon=1e-5, dtype=self.dtype) for _ in rev]
    self.out = nn.Dense(self.input_shape[0] * self.input_shape[1], dtype=self.dtype)
    self.drop = nn.Dropout(self.dropout)
    if self.cond_label:
      self.embed = LabelEmbed(self.num_classes, self.cond_dim)

  def _mlp(self, h, layers, bns, train):
    for dense, bn in zip(layers, bns):
      h = nn.relu(bn(dense(h), use_running_average=not train))
      h = self.drop(h, deterministic=not train)
    return h

  def encode(self, batch, train: bool):
    x = batch["x"].astype(self.dtype)
    h = self._mlp(x.reshape(x.shape[0], -1), self.enc, self.enc_bns, train)
    h = with_label(self, h, batch)
    return (self.mu_head(h).astype(jnp.float32), self.logvar_head(h).astype(jnp.float32))

  def decode(self, z, batch, train: bool):
    h = with_label(self, z.astype(self.dtype), batch)
    h = self._mlp(h, self.dec, self.dec_bns, train)
    x = self.out(h).reshape(z.shape[0], *self.input_shape)
    return layers.activate(x.astype(jnp.float32), self.output_activation)

  def __call__(self, batch, train: bool = False):
    mu, logvar = self.encode(batch, train)
    z = layers.reparameterize(self, mu, logvar)
    return {"recon": self.decode(z, batch, train), "mu": mu, "logvar": logvar, "z": z}


def with_label(module: nn.Module, h: jax.Array, batch) -> jax.Array:
  """`h` with the embedding of `module.cond_label` appended (conditional models), else `h`."""
  if not module.cond_label:
    return h
  cond = module.embed(batch[f"label_{module.cond_label}"]).astype(module.dtype)
  return jnp.concatenate([h, cond], axis=-1)


def _cond_fields(model_config, spec: DataSpec) -> dict:
  label = model_config.get("cond_label", "")
  if not label:
    return {}
  return {
    "cond_label": label,
    "num_classes": spec.num_classes(label),
    "cond_dim": model_config.get("cond_dim", 32),
  }


def build_conv_vae(model_config, spec: DataSpec, dtype: str = "float32") -> ConvVAE:
  return ConvVAE(
    input_shape=spec.input_shape,
    channels=tuple(model_config.channels),
    latent_dim=model_config.latent_dim,
    output_activation=model_config.get("output_activation", "none"),
    conv_transpose=model_config.get("conv_transpose", "auto"),
    dtype=layers.compute_dtype(dtype),
    **_cond_fields(model_config, spec),
  )


def build_basic_vae(model_config, spec: DataSpec, dtype: str = "float32") -> BasicVAE:
  return BasicVAE(
    input_shape=spec.input_shape,
    hidden=tuple(model_config.hidden),
    latent_dim=model_config.latent_dim,
    dropout=model_config.dropout,
    output_activation=model_config.get("output_activation", "none"),
    dtype=layers.compute_dtype(dtype),
    **_cond_fields(model_config, spec),
  )
