"""PyTorch twin of `jaxvae.models.vqvae.PuzzleVQVAE` (seed 004) and of
`jaxvae.variants.puzzle_vq.objective`.

Encoder: 4x4 stride-2 convs 1->32->64 (padding 1) + BatchNorm + ReLU, bilinear resize to the
30 x 30 grid, 1x1 conv to 64. Codebook 10 x 64 (uniform +-0.1), nearest code, codebook loss +
0.25 x commitment, straight-through. Decoder: 1x1 conv + BN + ReLU, 4x4 stride-2 transposed
convs (padding 1) to 32 and 16 channels + BN + ReLU, bilinear resize to the input, 1x1 conv,
sigmoid. 83,777 parameters at the seed size, the same as the Flax module.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _bn_relu(c: int) -> list[nn.Module]:
  return [nn.BatchNorm2d(c, eps=1e-5, momentum=0.1), nn.ReLU()]


class PuzzleVQVAE(nn.Module):
  """`forward(x [B, H, W]) -> dict(recon, vq_loss, codes, perplexity)`."""

  def __init__(
    self,
    num_codes=10,
    code_dim=64,
    grid=(30, 30),
    enc_channels=(32, 64),
    dec_channels=(64, 32, 16),
    commitment_cost=0.25,
    init_scale=0.1,
  ):
    super().__init__()
    self.grid = tuple(int(g) for g in grid)
    self.commitment_cost = float(commitment_cost)
    layers, c_in = [], 1
    for c in enc_channels:
      layers += [nn.Conv2d(c_in, c, 4, 2, 1)] + _bn_relu(c)
      c_in = c
    self.enc_convs = nn.Sequential(*layers)
    self.enc_out = nn.Conv2d(c_in, code_dim, 1)
    self.codebook = nn.Parameter(torch.empty(num_codes, code_dim).uniform_(-init_scale, init_scale))
    layers = [nn.Conv2d(code_dim, dec_channels[0], 1)] + _bn_relu(dec_channels[0])
    c_in = dec_channels[0]
    for c in dec_channels[1:]:
      layers += [nn.ConvTranspose2d(c_in, c, 4, 2, 1)] + _bn_relu(c)
      c_in = c
    self.dec_convs = nn.Sequential(*layers)
    self.dec_out = nn.Conv2d(c_in, 1, 1)

  def quantize(self, z: torch.Tensor) -> dict:
    """z [B, D, h, w] -> straight-through quantized z and the VQ loss terms (float32)."""
    b, d, h, w = z.shape
    flat = z.float().permute(0, 2, 3, 1).reshape(-1, d)
    book = self.codebook
    dist = flat.square().sum(1, keepdim=True) - 2.0 * flat @ book.t() + book.square().sum(1)[None]
    codes = dist.argmin(1)
    q = book[codes]
    codebook_loss = F.mse_loss(q, flat.detach())
    commitment_loss = F.mse_loss(flat, q.detach())
    counts = torch.bincount(codes, minlength=book.shape[0]).float()
    probs = counts / counts.sum()
    perplexity = torch.exp(-(probs * torch.log(probs.clamp_min(1e-30))).sum())
    quantized = flat + (q - flat).detach()
    quantized = quantized.view(b, h, w, d).permute(0, 3, 1, 2).to(z.dtype)
    return {
      "quantized": quantized,
      "codes": codes.view(b, h, w),
      "vq_loss": codebook_loss + self.commitment_cost * commitment_loss,
      "perplexity": perplexity,
    }

  def forward(self, x: torch.Tensor) -> dict:
    size = tuple(x.shape[1:])
    h = self.enc_convs(x[:, None])
    h = F.interpolate(h, size=self.grid, mode="bilinear", align_corners=False)
    vq = self.quantize(self.enc_out(h))
    h = self.dec_convs(vq["quantized"])
    h = F.interpolate(h, size=size, mode="bilinear", align_corners=False)
    recon = torch.sigmoid(self.dec_out(h).float())[:, 0]
    return dict(vq, recon=recon)


def vq_loss(model: PuzzleVQVAE, batch: dict) -> torch.Tensor:
  """`jaxvae.variants.puzzle_vq.objective` with a full mask: MSE + the quantizer's loss."""
  out = model(batch["x"])
  return F.mse_loss(out["recon"], batch["x"]) + out["vq_loss"]


def build(config, input_shape):
  """(model, loss_fn(model, batch)) from a jaxvae puzzle_vqvae config."""
  del input_shape  # the output size follows the input, as in the Flax module
  m = config.model
  if m.get("use_ema", False):
    raise NotImplementedError(
      "the torch VQ-VAE reference learns the codebook by gradient "
      "(model.use_ema=False, the seed's setting)"
    )
  model = PuzzleVQVAE(
    int(m.num_codes),
    int(m.code_dim),
    tuple(m.grid),
    tuple(m.enc_channels),
    tuple(m.dec_channels),
    float(m.commitment_cost),
    float(m.init_scale),
  )
  return model, vq_loss
