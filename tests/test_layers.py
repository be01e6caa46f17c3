"""jaxvae.models.layers.ConvTranspose is flax's ConvTranspose computed another way: same
parameters, same outputs, same gradients, for every geometry the conv models use."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvae.models import layers

GEOMETRIES = [  # kernel, stride, padding, transpose_kernel, input H x W
  (4, 2, "SAME", False, (5, 7)),  # ConvVAE / multimodal decoders
  (4, 2, ((2, 2), (2, 2)), True, (6, 5)),  # puzzle VQ-VAE (PyTorch k4 s2 p1)
  (3, 2, "SAME", False, (4, 6)),  # spectral VAE
  (5, 3, "SAME", True, (3, 4)),  # phases with different tap counts
  (2, 2, "VALID", False, (3, 3)),
]


@pytest.mark.parametrize(
  "impl,k,s,padding,transpose_kernel,hw",
  [("matmul", *g) for g in GEOMETRIES] + [("lax", *GEOMETRIES[1])],
)
def test_matches_flax_conv_transpose(impl, k, s, padding, transpose_kernel, hw):
  x = jax.random.normal(jax.random.key(0), (2, *hw, 3))
  kwargs = dict(
    features=4,
    kernel_size=(k, k),
    strides=(s, s),
    padding=padding,
    transpose_kernel=transpose_kernel,
  )
  ref, ours = nn.ConvTranspose(**kwargs), layers.ConvTranspose(**kwargs, impl=impl)
  variables = ref.init(jax.random.key(1), x)
  # Same parameter shapes and initialization: checkpoints and parameter counts don't change.
  ours_init = ours.init(jax.random.key(1), x)
  jax.tree.map(np.testing.assert_array_equal, variables, ours_init)

  def loss(module):
    return lambda v, x: jnp.sum(jnp.sin(module.apply(v, x)))

  np.testing.assert_allclose(
    jax.jit(ours.apply)(variables, x), jax.jit(ref.apply)(variables, x), atol=1e-5
  )
  g_ours = jax.jit(jax.grad(loss(ours), argnums=(0, 1)))(variables, x)
  g_ref = jax.jit(jax.grad(loss(ref), argnums=(0, 1)))(variables, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4), g_ours, g_ref)


def test_auto_picks_the_matmul_form_on_cpu_and_rejects_unknown_impls():
  x = jnp.ones((1, 3, 3, 2))
  module = layers.ConvTranspose(2, (4, 4), strides=(2, 2))
  variables = module.init(jax.random.key(0), x)
  text = jax.jit(module.apply).lower(variables, x).as_text()
  assert jax.default_backend() != "cpu" or "convolution" not in text
  with pytest.raises(ValueError, match="impl"):
    layers.ConvTranspose(2, (4, 4), impl="fft").init(jax.random.key(0), x)


def test_transpose_padding_matches_lax():
  # lax.conv_transpose's output length for 'SAME' is in * stride; ours must agree.
  for k in (2, 3, 4, 5):
    for s in (1, 2, 3):
      lo, hi = layers.transpose_padding(k, s, "SAME")
      assert (7 - 1) * s + 1 + lo + hi - k + 1 == 7 * s


@pytest.mark.parametrize(
  "hw, k, s, pads",
  [
    ((16, 22), 4, 2, ((1, 1), (1, 1))),  # the conv encoders' layer, even sizes
    ((9, 11), 4, 2, ((1, 1), (1, 1))),  # odd sizes: a remainder the stride leaves out
    ((9, 11), 3, 2, ((0, 0), (1, 2))),
    ((8, 8), 5, 3, ((2, 1), (0, 0))),
    ((6, 7), 2, 2, ((3, 3), (0, 0))),  # padding past the kernel: XLA's gradient
    ((9, 11), 1, 1, ((0, 0), (0, 0))),  # pointwise: a dot over the channels
  ],
)
def test_strided_conv_matches_flax_conv_with_its_gradients(hw, k, s, pads):
  """layers.Conv (the input gradient as the sub-pixel transposed convolution) against
  flax.linen.Conv: same parameters, outputs, and gradients for the input and kernel."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, *hw, 3))
  ref = nn.Conv(5, (k, k), strides=(s, s), padding=pads)
  new = layers.Conv(5, (k, k), strides=(s, s), padding=pads, impl="matmul")
  variables = ref.init(jax.random.PRNGKey(1), x)
  assert jax.tree.structure(new.init(jax.random.PRNGKey(1), x)) == jax.tree.structure(variables)
  loss = lambda m: lambda v, x: jnp.sum(jnp.sin(m.apply(v, x)))
  want = jax.value_and_grad(loss(ref), argnums=(0, 1))(variables, x)
  got = jax.jit(jax.value_and_grad(loss(new), argnums=(0, 1)))(variables, x)
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=2e-5, rtol=1e-5)
  if k == 1:  # the pointwise convolution is a dot, forward and backward
    program = str(jax.make_jaxpr(jax.grad(loss(new), argnums=(0, 1)))(variables, x))
    assert "conv_general_dilated" not in program and "dot_general" in program


@pytest.mark.parametrize("shape", [(64, 513, 31), (3, 1001), (7,)])
def test_dropout_keeps_the_rate_unbiased_and_its_rng_stream(shape):
  """layers.Dropout (16 random bits per element): about 1 - rate of the elements kept, the
  kept ones scaled so the mean is unchanged, the same mask for the same rng, identity when
  deterministic or at rate 0, zeros at rate 1."""
  x = jnp.ones(shape)
  drop = lambda rate, seed=0, **kw: layers.Dropout(rate, **kw).apply(
    {}, x, rngs={"dropout": jax.random.PRNGKey(seed)}
  )
  y = np.asarray(drop(0.1, deterministic=False))
  kept = y != 0
  n = x.size
  tolerance = 4 * np.sqrt(0.09 / n) + 1e-9  # four binomial standard deviations
  assert abs(kept.mean() - 0.9) < tolerance
  np.testing.assert_allclose(y[kept], 65536 / (65536 - 6554), rtol=1e-6)
  if n > 10_000:
    assert abs(y.mean() - 1.0) < 5 * np.sqrt(0.1 / 0.9 / n)
    # Column j and column j + 16 come from one 32-bit draw's two halves: independent, so
    # both are dropped about 1 % of the time (10 % if a half were used twice).
    rows = kept.reshape(-1, shape[-1])
    both_dropped = (~rows[:, :15] & ~rows[:, 16:31]).mean()
    assert both_dropped == pytest.approx(0.01, abs=0.003)
  np.testing.assert_array_equal(y, np.asarray(drop(0.1, deterministic=False)))
  if n > 1000:  # seven elements share a mask between two seeds a quarter of the time
    assert not np.array_equal(y, np.asarray(drop(0.1, seed=1, deterministic=False)))
  np.testing.assert_array_equal(np.asarray(drop(0.1, deterministic=True)), np.asarray(x))
  np.testing.assert_array_equal(np.asarray(drop(0.0, deterministic=False)), np.asarray(x))
  np.testing.assert_array_equal(np.asarray(drop(1.0, deterministic=False)), 0 * np.asarray(x))
