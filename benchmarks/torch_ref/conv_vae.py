"""PyTorch twin of `jaxvae.models.vae.ConvVAE` (seed 000, unconditional) and of its ELBO.

Same layers as the Flax module: three 4x4 stride-2 convs (padding 1) + BatchNorm +
LeakyReLU(0.2), dense mu / logvar heads on the flattened map, a dense layer back to the map,
mirrored 4x4 stride-2 transposed convs (padding 1 doubles the size, like flax 'SAME'), and a
bilinear resize when the input is not a multiple of 2^depth (1292 frames -> 1288 -> 1292).
At the seed size (128 x 1292, channels 16/32/64, latent 128) both have 63,555,809 parameters.
Tensors are NCHW (PyTorch's native layout, as the original ran).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _down(c_in: int, c_out: int) -> list[nn.Module]:
  return [
    nn.Conv2d(c_in, c_out, 4, 2, 1),
    nn.BatchNorm2d(c_out, eps=1e-5, momentum=0.1),
    nn.LeakyReLU(0.2),
  ]


class ConvVAE(nn.Module):
  """See the module docstring; `forward(x [B, H, W]) -> (recon, mu, logvar)`."""

  def __init__(
    self, input_shape, channels=(16, 32, 64), latent_dim: int = 128, output_activation: str = "none"
  ):
    super().__init__()
    self.input_shape = tuple(int(v) for v in input_shape)
    self.channels = tuple(int(c) for c in channels)
    self.output_activation = output_activation
    n = len(self.channels)
    h, w = self.input_shape
    self.grid = (h // 2**n, w // 2**n)
    layers, c_in = [], 1
    for c in self.channels:
      layers += _down(c_in, c)
      c_in = c
    self.encoder = nn.Sequential(*layers)
    flat = self.channels[-1] * self.grid[0] * self.grid[1]
    self.mu_head = nn.Linear(flat, latent_dim)
    self.logvar_head = nn.Linear(flat, latent_dim)
    self.dec_dense = nn.Linear(latent_dim, flat)
    out_channels = list(self.channels[-2::-1]) + [1]
    layers, c_in = [], self.channels[-1]
    for c in out_channels[:-1]:
      layers += [
        nn.ConvTranspose2d(c_in, c, 4, 2, 1),
        nn.BatchNorm2d(c, eps=1e-5, momentum=0.1),
        nn.LeakyReLU(0.2),
      ]
      c_in = c
    layers.append(nn.ConvTranspose2d(c_in, 1, 4, 2, 1))
    self.decoder = nn.Sequential(*layers)

  def encode(self, x: torch.Tensor):
    h = self.encoder(x[:, None]).flatten(1)
    return self.mu_head(h), self.logvar_head(h)

  def decode(self, z: torch.Tensor) -> torch.Tensor:
    h = self.dec_dense(z).view(z.shape[0], self.channels[-1], *self.grid)
    x = self.decoder(h)
    if tuple(x.shape[2:]) != self.input_shape:
      x = F.interpolate(x.float(), size=self.input_shape, mode="bilinear", align_corners=False)
    x = x[:, 0].float()
    return torch.sigmoid(x) if self.output_activation == "sigmoid" else x

  def forward(self, x: torch.Tensor):
    mu, logvar = self.encode(x)
    mu, logvar = mu.float(), logvar.float()
    z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
    return self.decode(z), mu, logvar


def elbo(model: ConvVAE, batch: dict, kl_weight: float) -> torch.Tensor:
  """The reduction of `jaxvae.variants.audio_vae.elbo` (mask all ones, no free bits):
  per-example sum
  of squared errors averaged over the batch, plus kl_weight x the summed per-dimension
  batch-mean KL."""
  x = batch["x"]
  recon, mu, logvar = model(x)
  rec = torch.square(recon - x).flatten(1).sum(1).mean()
  kl = 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)
  return rec + kl_weight * kl.mean(0).sum()


def build(config, input_shape):
  """(model, loss_fn(model, batch)) from a jaxvae config (`config.model` of a conv VAE)."""
  m = config.model
  if m.get("cond_label", ""):
    raise NotImplementedError(
      f"the torch conv VAE reference is unconditional (model.cond_label={m.cond_label!r})"
    )
  model = ConvVAE(
    input_shape, tuple(m.channels), int(m.latent_dim), m.get("output_activation", "none")
  )
  kl_weight = float(config.kl.beta_end)
  return model, lambda mdl, batch: elbo(mdl, batch, kl_weight)
