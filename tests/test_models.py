"""Shapes, parameter counts and the basic maths of the Gaussian VAEs and the ELBO."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxvae.losses import divergence
from jaxvae.models import vae
from jaxvae.training import state as train_state
from jaxvae.variants import audio_vae


def _batch(shape, n=3, labels=None):
  x = jax.random.normal(jax.random.PRNGKey(0), (n, *shape))
  batch = {"x": x, "mask": jnp.ones((n,))}
  for k, v in (labels or {}).items():
    batch[f"label_{k}"] = jnp.asarray(v, jnp.int32)
  return batch


def _init_apply(model, batch, train_mode=False):
  """Jitted init + apply: one compile each instead of one per primitive (eager)."""
  variables = jax.jit(lambda b: train_state.init_variables(model, b, jax.random.PRNGKey(1)))(batch)
  mutable = [k for k in variables if k != "params"] if train_mode else False

  def apply(variables, batch):
    rngs = train_state.step_rngs(jax.random.PRNGKey(2), jnp.int32(0))
    return model.apply(variables, batch, train=train_mode, rngs=rngs, mutable=mutable)

  out = jax.jit(apply)(variables, batch)
  return variables, out[0] if train_mode else out


@pytest.mark.parametrize("shape", [(32, 87), (16, 16), (24, 50)])
def test_conv_vae_shapes(shape):
  model = vae.ConvVAE(input_shape=shape, channels=(4, 8, 8), latent_dim=6)
  _, out = _init_apply(model, _batch(shape), train_mode=True)
  chex.assert_shape(out["recon"], (3, *shape))
  chex.assert_shape([out["mu"], out["logvar"], out["z"]], (3, 6))
  chex.assert_type(out["recon"], jnp.float32)


@pytest.mark.parametrize("shape", [(32, 87), (8, 10)])
def test_basic_vae_shapes(shape):
  model = vae.BasicVAE(input_shape=shape, hidden=(8, 16), latent_dim=4)
  _, out = _init_apply(model, _batch(shape))
  chex.assert_shape(out["recon"], (3, *shape))
  chex.assert_shape(out["mu"], (3, 4))


def _count(model, shape, labels=None):
  batch = _batch(shape, 2, labels)
  v = jax.eval_shape(lambda: train_state.init_variables(model, batch, jax.random.PRNGKey(0)))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(v["params"]))


def test_seed_000_parameter_counts():
  """The seed-size models match the originals' sizes (MISSION.md)."""
  assert _count(vae.BasicVAE(input_shape=(128, 1292)), (128, 1292)) == 5_488_032
  conv = _count(vae.ConvVAE(input_shape=(128, 1292)), (128, 1292))
  assert conv == 63_555_809  # "about 63.6 M"
  cvae = _count(
    vae.ConvVAE(input_shape=(128, 1292), cond_label="genre", num_classes=3),
    (128, 1292),
    {"genre": [0, 1]},
  )
  assert 68.5e6 < cvae < 69.1e6  # "about 68.8 M"


def test_kl_of_standard_normal_is_zero_and_positive_otherwise():
  mu = jnp.zeros((4, 8))
  logvar = jnp.zeros((4, 8))
  np.testing.assert_allclose(divergence.gaussian_kl(mu, logvar), 0.0, atol=1e-7)
  kl = divergence.gaussian_kl(mu + 1.0, logvar)
  np.testing.assert_allclose(kl, 0.5, rtol=1e-6)  # 0.5 * mu^2 per dimension


def _cfg(free_bits=0.0):
  c = ml_collections.ConfigDict()
  c.objective = {"recon": "mse"}
  c.kl = {"free_bits": free_bits}
  return c


def test_elbo_masks_padding_and_free_bits():
  batch = {"x": jnp.ones((2, 3, 3)), "mask": jnp.array([1.0, 0.0])}
  outputs = {
    "recon": jnp.stack([jnp.ones((3, 3)), jnp.zeros((3, 3))]),
    "mu": jnp.zeros((2, 4)),
    "logvar": jnp.zeros((2, 4)),
  }
  loss, m = audio_vae.elbo(outputs, batch, kl_weight=1.0, config=_cfg())
  assert float(m["recon"]) == 0.0  # the padded example's error is not counted
  loss_fb, m_fb = audio_vae.elbo(outputs, batch, kl_weight=1.0, config=_cfg(0.5))
  assert float(loss_fb) == pytest.approx(4 * 0.5)  # each dim floored at 0.5 nats
  assert float(m_fb["kl"]) == 0.0  # the reported KL is the real one


def test_conditioning_changes_the_decoder():
  shape = (16, 16)
  model = vae.ConvVAE(
    input_shape=shape, channels=(4, 4, 4), latent_dim=4, cond_label="genre", num_classes=3
  )
  batch = _batch(shape, 2, {"genre": [0, 0]})
  variables = train_state.init_variables(model, batch, jax.random.PRNGKey(0))
  z = jnp.ones((2, 4))
  a = model.apply(variables, z, batch, False, method=model.decode)
  b = model.apply(
    variables, z, dict(batch, label_genre=jnp.array([2, -1])), False, method=model.decode
  )
  assert not np.allclose(a, b)


def test_loss_falls_on_a_fixed_batch():
  shape = (16, 16)
  model = vae.ConvVAE(input_shape=shape, channels=(8, 8, 8), latent_dim=4)
  # Eight smooth patterns: learnable, unlike white noise.
  t = jnp.linspace(0, 1, 16)
  x = jnp.stack(
    [jnp.outer(jnp.sin(2 * np.pi * (k + 1) * t), jnp.cos(np.pi * k * t)) for k in range(8)]
  )
  batch = {"x": x, "mask": jnp.ones((8,))}
  config = _cfg()
  tx = optax.adam(3e-3)
  variables = train_state.init_variables(model, batch, jax.random.PRNGKey(0))
  params, state = variables["params"], {"batch_stats": variables["batch_stats"]}
  opt = tx.init(params)

  @jax.jit
  def step(params, state, opt, i):
    def loss_fn(p):
      out, new = model.apply(
        {"params": p, **state},
        batch,
        train=True,
        rngs=train_state.step_rngs(jax.random.PRNGKey(3), i),
        mutable=["batch_stats"],
      )
      return audio_vae.elbo(out, batch, kl_weight=0.1, config=config)[0], new

    (loss, new), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
    upd, opt = tx.update(g, opt)
    return optax.apply_updates(params, upd), new, opt, loss

  losses = []
  for i in range(60):
    params, state, opt, loss = step(params, state, opt, i)
    losses.append(float(loss))
  assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
