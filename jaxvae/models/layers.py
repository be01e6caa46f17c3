"""Pieces shared by the models: compute dtypes, the reparameterization, output activations,
and the transposed convolution.

`ConvTranspose` is a drop-in for `flax.linen.ConvTranspose` (same parameters, same names,
same initialization, same outputs) with a choice of how the strided transposed convolution
is computed (`impl`):

  'lax'     `lax.conv_transpose`: a convolution over the stride-dilated input (cuDNN on GPU).
  'matmul'  the sub-pixel ("phase") form: for each output phase a in [0, s),
              out[s*m + a] = sum_t x[m + base_a + t] * W'[r_a + s*t]
            with W' the kernel (spatially flipped when `transpose_kernel`), r_a = (pad_lo - a)
            mod s and base_a = (r_a - pad_lo + a) / s. Every phase uses ceil(k / s) taps, so
            the arithmetic equals the transposed convolution's (no zero taps, no dilated
            input); all phases come out of one matmul over the shifted copies of x (im2col)
            and are interleaved ("depth to space").
  'auto'    'matmul' on CPU, 'lax' elsewhere.

Why: XLA:CPU lowers the weight gradient of `lax.conv_transpose` to a slow input-dilated
convolution (92 % of the puzzle VQ-VAE's CPU step; even a plain stride-1 2x2 convolution's
weight gradient is slow there), while the matmul form's forward and backward are dense
matmuls. On GPUs the direct form stays: it is what cuDNN is built for. Measured in
BUILD_NOTES.md.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

IMPLS = ("auto", "matmul", "lax")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def compute_dtype(name: Any) -> Any:
  """`config.dtype` ('float32' | 'bfloat16' | 'float16') -> the jnp dtype; a dtype passes."""
  if not isinstance(name, str):
    return name
  return DTYPES[name]


def reparameterize(
  module: nn.Module, mu: jax.Array, logvar: jax.Array, scale: jax.Array | None = None
) -> jax.Array:
  """z = mu + scale * sigma * eps, eps ~ N(0, I) from the module's 'sample' rng stream,
  float32; `scale` (VaDE's posterior noise, 0 in its autoencoder stage) defaults to none."""
  eps = jax.random.normal(module.make_rng("sample"), mu.shape, jnp.float32)
  sigma = jnp.exp(0.5 * logvar)
  if scale is not None:
    sigma = scale * sigma
  return mu + sigma * eps


class Dropout(nn.Module):
  """`flax.linen.Dropout` (its rate, deterministic and rng_collection, no broadcast_dims;
  inverted scaling) drawing 16 random bits per element instead of a float: each 32-bit draw
  gives two elements, which on the CPU makes a mask three times faster to draw (the seed
  transformer's residual dropouts were about 10 % of its CPU step). The rate is rounded to
  a multiple of 2^-16 and the kept values scaled (in float32) by the exact inverse of the
  kept fraction, so the layer stays unbiased. The draws keep every axis but the last, so a
  sharded batch draws its own."""

  rate: float
  deterministic: bool | None = None
  rng_collection: str = "dropout"

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool | None = None) -> jax.Array:
    deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
    threshold = int(round(self.rate * 65536))
    if deterministic or threshold == 0:
      return x
    if threshold >= 65536:
      return jnp.zeros_like(x)
    last = x.shape[-1] if x.ndim else 1
    bits = jax.random.bits(
      self.make_rng(self.rng_collection), (*x.shape[:-1], -(-last // 2)), jnp.uint32
    )
    halves = jnp.concatenate([bits & 0xFFFF, bits >> 16], axis=-1)[..., :last]
    keep = halves.reshape(x.shape) >= threshold
    scaled = (x.astype(jnp.float32) * (65536 / (65536 - threshold))).astype(x.dtype)
    return jnp.where(keep, scaled, jnp.zeros_like(x))


def activate(x: jax.Array, name: str) -> jax.Array:
  """A decoder's output activation: 'sigmoid' (for a Bernoulli likelihood) or none."""
  if name == "sigmoid":
    return jax.nn.sigmoid(x)
  return x


def transpose_padding(k: int, s: int, padding) -> tuple[int, int]:
  """The (low, high) padding of the stride-dilated input, as `lax.conv_transpose` uses it."""
  if isinstance(padding, str):
    if padding == "VALID":
      return k - 1, k - 1 + max(s - k, 0)
    if padding != "SAME":
      raise ValueError(f"padding {padding!r}: expected 'SAME', 'VALID' or (low, high) pairs")
    total = k + s - 2
    low = k - 1 if s > k - 1 else int(np.ceil(total / 2))
    return low, total - low
  low, high = padding
  return int(low), int(high)


def phase_taps(k: int, s: int, pad_lo: int) -> tuple[int, list[int], list[int]]:
  """(taps per phase T, first kernel index r_a and input offset base_a for each phase a)."""
  taps = -(-k // s)
  first = [(pad_lo - a) % s for a in range(s)]
  base = [(r - pad_lo + a) // s for a, r in zip(range(s), first)]
  return taps, first, base


def _phase_kernel(kernel: jax.Array, k: int, s: int, first: Sequence[int], taps: int) -> jax.Array:
  """[k, I, O] along one spatial axis -> [T, I, s, O]: tap t of phase a is W'[r_a + s*t]
  (zero past the kernel's end)."""
  padded = jnp.pad(kernel, [(0, s * taps - k)] + [(0, 0)] * (kernel.ndim - 1))
  return jnp.stack([padded[r : r + s * taps : s] for r in first], axis=-2)


def _weights_and_impl(module: nn.Module, x: jax.Array, shape: tuple[int, ...]):
  """A convolution module's (x, kernel, bias or None, impl) in its compute dtype, with flax's
  parameter names and initializers and 'auto' resolved ('matmul' on CPU, 'lax' elsewhere)."""
  if module.impl not in IMPLS:
    raise ValueError(f"{type(module).__name__} impl {module.impl!r}: expected one of {IMPLS}")
  kernel = module.param("kernel", module.kernel_init, shape, module.param_dtype)
  bias = (
    module.param("bias", module.bias_init, (module.features,), module.param_dtype)
    if module.use_bias
    else None
  )
  x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=module.dtype)
  impl = module.impl
  if impl == "auto":
    impl = "matmul" if jax.default_backend() == "cpu" else "lax"
  return x, kernel, bias, impl


class ConvTranspose(nn.Module):
  """2-D strided transposed convolution, NHWC (flax.linen.ConvTranspose's fields, plus
  `impl`); see the module docstring."""

  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (1, 1)
  padding: Any = "SAME"
  transpose_kernel: bool = False
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros_init()
  impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kh, kw = self.kernel_size
    in_features = x.shape[-1]
    shape = (kh, kw) + (
      (self.features, in_features) if self.transpose_kernel else (in_features, self.features)
    )
    x, kernel, bias, impl = _weights_and_impl(self, x, shape)
    if impl == "lax":
      y = jax.lax.conv_transpose(
        x,
        kernel,
        tuple(self.strides),
        self._padding(),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        transpose_kernel=self.transpose_kernel,
      )
    else:
      y = self._phases(x, kernel)
    return y if bias is None else y + bias

  def _padding(self):
    if isinstance(self.padding, str):
      return self.padding
    return tuple(tuple(int(v) for v in p) for p in self.padding)

  def _phases(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
    if self.transpose_kernel:  # stored [kh, kw, O, I] and applied flipped, as in lax
      kernel = jnp.flip(kernel, (0, 1)).swapaxes(2, 3)
    pads = (self.padding, self.padding) if isinstance(self.padding, str) else self.padding
    return phase_conv_transpose(x, kernel, tuple(self.strides), pads)


def phase_conv_transpose(x: jax.Array, kernel: jax.Array, strides, pads) -> jax.Array:
  """`lax.conv_transpose(x, kernel, strides, pads)` (NHWC, HWIO, transpose_kernel=False) in
  the sub-pixel form; `pads`: per spatial axis 'SAME', 'VALID' or (low, high)."""
  (sh, sw), (kh, kw) = strides, kernel.shape[:2]
  geo = []
  for size, k, s, pad in ((x.shape[1], kh, sh, pads[0]), (x.shape[2], kw, sw, pads[1])):
    lo, hi = transpose_padding(k, s, pad)
    out = (size - 1) * s + 1 + lo + hi - k + 1
    if out % s:
      raise ValueError(
        f"ConvTranspose: output length {out} is not a multiple of the "
        f"stride {s}; use impl='lax' for this geometry"
      )
    taps, first, base = phase_taps(k, s, lo)
    geo.append((size, out // s, s, taps, first, base))
  (h, mh, _, th, fh, bh), (w, mw, _, tw, fw, bw) = geo
  # [kh, kw, I, O] -> [Th, Tw, I, sh * sw * O]: all phases side by side in the output.
  k_h = _phase_kernel(kernel, kh, sh, fh, th)  # [Th, kw, I, sh, O]
  k_hw = _phase_kernel(jnp.moveaxis(k_h, 1, 0), kw, sw, fw, tw)  # [Tw, Th, I, sh, sw, O]
  phase_kernel = jnp.moveaxis(k_hw, 1, 0).reshape(th, tw, x.shape[-1], -1)
  # Pad so every phase's window lies inside; phase a of output m reads conv row m + shift_a.
  lo_h, lo_w = max(0, -min(bh)), max(0, -min(bw))
  hi_h = max(0, mh - 1 + max(bh) + th - 1 - (h - 1))
  hi_w = max(0, mw - 1 + max(bw) + tw - 1 - (w - 1))
  # The stride-1 convolution as one matmul over the Th x Tw shifted copies (im2col).
  xp = jnp.pad(x, ((0, 0), (lo_h, hi_h), (lo_w, hi_w), (0, 0)))
  p, q = xp.shape[1] - th + 1, xp.shape[2] - tw + 1
  cols = jnp.concatenate([xp[:, i : i + p, j : j + q] for i in range(th) for j in range(tw)], -1)
  y = jnp.einsum("bpqk,ko->bpqo", cols, phase_kernel.reshape(-1, phase_kernel.shape[-1]))
  y = y.reshape(*y.shape[:3], sh, sw, -1)
  rows = [
    jax.lax.slice_in_dim(y[:, :, :, a], bh[a] + lo_h, bh[a] + lo_h + mh, axis=1) for a in range(sh)
  ]  # [B, mh, W', sw, O]
  cols = [
    jnp.stack(
      [
        jax.lax.slice_in_dim(r[:, :, :, b], bw[b] + lo_w, bw[b] + lo_w + mw, axis=2)
        for b in range(sw)
      ],
      axis=3,
    )
    for r in rows
  ]  # [B, mh, mw, sw, O]
  y = jnp.stack(cols, axis=2)  # [B, mh, sh, mw, sw, O]
  return y.reshape(y.shape[0], mh * sh, mw * sw, y.shape[-1])


class Conv(nn.Module):
  """2-D strided convolution, NHWC: `flax.linen.Conv`'s parameters, names, initialization and
  outputs for explicit (low, high) padding pairs, with a choice of how its input gradient is
  computed (`impl`): 'lax' XLA's (a convolution over the stride-dilated output gradient,
  slow on XLA:CPU: 12 % of the seed conv VAE's CPU step), 'matmul' the sub-pixel transposed
  convolution (`phase_conv_transpose`), 'auto' 'matmul' on CPU. The forward pass and the
  kernel's gradient are XLA's in every case, but for a pointwise (1x1, stride 1, unpadded)
  convolution under 'matmul', which is computed as the dot over channels it is (XLA:CPU
  takes a convolution's kernel gradient through a batch-channel transposed copy of x)."""

  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (1, 1)
  padding: Sequence[tuple[int, int]] = ((0, 0), (0, 0))
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros_init()
  impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    shape = (*self.kernel_size, x.shape[-1], self.features)
    x, kernel, bias, impl = _weights_and_impl(self, x, shape)
    strides = tuple(int(v) for v in self.strides)
    if isinstance(self.padding, str) or len(self.padding) != 2:
      raise ValueError(f"Conv padding {self.padding!r}: expected two (low, high) pairs")
    pads = tuple(tuple(int(v) for v in p) for p in self.padding)
    if impl == "matmul" and shape[:2] == (1, 1) and strides == (1, 1) and pads == ((0, 0),) * 2:
      # A pointwise convolution as the dot it is: XLA:CPU computes a convolution's kernel
      # gradient with batch and channels swapped, a transposed copy of the input.
      y = jnp.einsum("bhwc,co->bhwo", x, kernel[0, 0])
    elif impl == "lax" or strides == (1, 1):
      y = _conv(x, kernel, strides, pads)
    else:
      y = _conv_phase_grad(x, kernel, strides, pads)
    return y if bias is None else y + bias


def _conv(x, kernel, strides, pads):
  return jax.lax.conv_general_dilated(
    x, kernel, strides, pads, dimension_numbers=("NHWC", "HWIO", "NHWC")
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_phase_grad(x, kernel, strides, pads):
  return _conv(x, kernel, strides, pads)


def _conv_phase_grad_fwd(x, kernel, strides, pads):
  return _conv(x, kernel, strides, pads), (x, kernel)


def _conv_phase_grad_bwd(strides, pads, residuals, g):
  """The input gradient as the transposed convolution of g in the sub-pixel form; the
  kernel's as XLA derives it."""
  x, kernel = residuals
  flipped = jnp.flip(kernel, (0, 1)).swapaxes(2, 3)  # [kh, kw, O, I]
  t_pads = []
  for n, k, s, (lo, hi) in zip(x.shape[1:3], kernel.shape[:2], strides, pads):
    r = (n + lo + hi - k) % s
    more = -n % s  # the phase form makes a multiple of the stride: cut the rest off
    t_pads.append((k - 1 - lo, k - 1 - hi + r + more))
  if min(min(p) for p in t_pads) < 0:  # a padding larger than the kernel: XLA's form
    dx = jax.vjp(lambda v: _conv(v, kernel, strides, pads), x)[1](g)[0]
  else:
    dx = phase_conv_transpose(g, flipped, strides, t_pads)[:, : x.shape[1], : x.shape[2]]
  dk = jax.vjp(lambda w: _conv(x, w, strides, pads), kernel)[1](g)[0]
  return dx.astype(x.dtype), dk


_conv_phase_grad.defvjp(_conv_phase_grad_fwd, _conv_phase_grad_bwd)
