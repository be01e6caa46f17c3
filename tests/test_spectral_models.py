"""SpectralVAE (seed 002), HarmonicLayer and HarmonicVAE (seed 003): shapes, sizes, maths."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxvae.data.spec import DataSpec
from jaxvae.losses import reconstruction
from jaxvae.models import spectral
from jaxvae.training import state as train_state
from jaxvae.variants import spectral as spectral_variant


def _key(seed):
  # The 'rbg' generator: its init programs compile several times faster on CPU than
  # threefry's, which keeps this file within its time budget on 2 cores.
  return jax.random.key(seed, impl="rbg")


def _batch(shape, n=2):
  x = np.random.default_rng(0).uniform(size=(n, *shape)).astype(np.float32)
  return {"x": jnp.asarray(x), "mask": jnp.ones((n,))}


def _abstract(model, shape):
  """(variables, outputs) as shapes only: seed-size models without allocating them."""
  batch = _batch(shape)
  variables = jax.eval_shape(lambda: train_state.init_variables(model, batch, _key(0)))
  rngs = train_state.step_rngs(_key(1), jnp.int32(0))
  mutable = [k for k in variables if k != "params"]
  out = jax.eval_shape(
    lambda v: model.apply(v, batch, train=True, rngs=rngs, mutable=mutable), variables
  )[0]
  return variables, out


def _n_params(variables):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))


def _check_outputs(out, shape, latent):
  chex.assert_shape(out["recon"], (2, *shape))
  chex.assert_shape([out["mu"], out["logvar"], out["z"]], (2, latent))
  for value in out.values():
    assert value.dtype == jnp.float32


# ----------------------------------------------------------------------------------------------
# SpectralVAE
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(16, 16), (20, 37), (9, 5)])
def test_spectral_vae_shapes(shape):
  model = spectral.SpectralVAE(input_shape=shape, channels=(2, 4, 4, 8), latent_dim=3)
  _, out = _abstract(model, shape)
  _check_outputs(out, shape, 3)


def test_spectral_vae_seed_size():
  """128 x 259 (3 s, n_fft 1024, hop 256): encoder map 256 x 8 x 17, latent 16."""
  model = spectral.build_spectral_vae(
    ml_collections.ConfigDict(
      {"channels": (32, 64, 128, 256), "latent_dim": 16, "output_activation": "none"}
    ),
    DataSpec(input_shape=(128, 259)),
  )
  variables, out = _abstract(model, (128, 259))
  _check_outputs(out, (128, 259), 16)
  params = variables["params"]
  chex.assert_shape(params["mu_head"]["kernel"], (256 * 8 * 17, 16))
  chex.assert_shape(params["enc_convs_0"]["kernel"], (3, 3, 1, 32))
  # convs 387,840 + BN 960 + heads 1,114,144 + dense 591,872 + deconvs 387,585 + BN 448
  assert _n_params(variables) == 2_482_849
  assert sum(x.size for x in jax.tree.leaves(variables["batch_stats"])) == 1_408


def test_spectral_vae_bfloat16_compute_returns_float32():
  model = spectral.SpectralVAE(
    input_shape=(8, 12), channels=(2, 2, 2, 2), latent_dim=2, dtype=jnp.bfloat16
  )
  variables, out = _abstract(model, (8, 12))
  _check_outputs(out, (8, 12), 2)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables["params"]))


# ----------------------------------------------------------------------------------------------
# Consonance and HarmonicLayer
# ----------------------------------------------------------------------------------------------


def test_consonance_matrix_properties():
  f0 = 220.0
  c = spectral.consonance_matrix([f0, 1.5 * f0, np.sqrt(2) * f0, 2 ** (1 / 24) * f0])
  np.testing.assert_array_equal(c, c.T)
  np.testing.assert_allclose(np.diag(c), 1.0)
  assert c[0, 1] == pytest.approx(1.0)  # a just fifth is a listed ratio
  assert c[0, 1] > c[0, 2] and c[0, 2] < 0.1  # the tritone is far from every just ratio
  assert c[0, 3] < 0.3  # a quarter tone too
  mel = spectral.consonance_matrix(spectral.mel_centres(32))
  chex.assert_shape(mel, (32, 32))
  np.testing.assert_allclose(mel, mel.T, atol=1e-7)
  np.testing.assert_allclose(np.diag(mel), 1.0)
  with pytest.raises(ValueError, match="positive"):
    spectral.consonance_matrix([0.0, 100.0])


def _layer_and_params(alpha=None):
  freqs = (100.0, 150.0, 125.0, 141.4)
  layer = spectral.HarmonicLayer(3, freqs=freqs)
  h = jnp.asarray(np.random.default_rng(1).normal(size=(5, 4)), jnp.float32)
  params = layer.init(_key(0), h)["params"]
  if alpha is not None:
    params = dict(params, alpha=jnp.float32(alpha))
  return layer, params, h, freqs


def test_harmonic_layer_with_alpha_zero_is_its_dense_part():
  layer, params, h, _ = _layer_and_params(alpha=0.0)
  dense = nn.Dense(3).apply({"params": params["dense"]}, h)
  chex.assert_trees_all_close(layer.apply({"params": params}, h), dense, atol=1e-6)
  layer, params, h, _ = _layer_and_params()
  assert float(params["alpha"]) == pytest.approx(0.1)
  assert not np.allclose(layer.apply({"params": params}, h), dense, atol=1e-3)


def test_harmonic_layer_matches_its_formula():
  layer, params, h, freqs = _layer_and_params(alpha=0.7)
  c = spectral.consonance_matrix(freqs)
  hn = np.asarray(h, np.float64)
  want = (
    hn @ params["dense"]["kernel"]
    + params["dense"]["bias"]
    + 0.7 * (hn @ c) @ params["harmonic"]["kernel"]
  )
  np.testing.assert_allclose(layer.apply({"params": params}, h), want, rtol=1e-5, atol=1e-5)


def test_harmonic_layer_checks_its_input_width():
  with pytest.raises(ValueError, match="3 frequencies"):
    spectral.HarmonicLayer(2, freqs=(100.0, 200.0, 300.0)).init(_key(0), jnp.ones((1, 4)))


# ----------------------------------------------------------------------------------------------
# HarmonicVAE
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "shape,harmonic,batch_norm", [((16, 10), True, True), ((8, 3), False, False)]
)
def test_harmonic_vae_shapes(shape, harmonic, batch_norm):
  model = spectral.HarmonicVAE(
    input_shape=shape,
    hidden=(12, 6),
    latent_dim=4,
    harmonic=harmonic,
    batch_norm=batch_norm,
    dropout=0.1,
  )
  variables, out = _abstract(model, shape)
  _check_outputs(out, shape, 4)
  assert ("harmonic_layer" in variables["params"]) == harmonic
  if harmonic:
    chex.assert_shape(
      variables["params"]["harmonic_layer"]["harmonic"]["kernel"], (shape[0], shape[0])
    )


def test_harmonic_vae_seed_size():
  """128 x 173 (4 s, hop 512) -> 1024 -> 512 -> 256 -> 128 and back: about 46.8 M weights."""
  config = ml_collections.ConfigDict(
    {
      "hidden": (1024, 512, 256),
      "latent_dim": 128,
      "dropout": 0.0,
      "harmonic": False,
      "output_activation": "sigmoid",
    }
  )
  spec = DataSpec(input_shape=(128, 173))
  variables, out = _abstract(spectral.build_harmonic_vae(config, spec), (128, 173))
  _check_outputs(out, (128, 173), 128)
  assert _n_params(variables) == 46_785_920
  config.harmonic = True  # + Dense 128x128 + bias, W2 128x128, alpha
  variables, _ = _abstract(spectral.build_harmonic_vae(config, spec), (128, 173))
  assert _n_params(variables) == 46_785_920 + 32_897


def test_harmonic_vae_output_is_in_unit_interval():
  model = spectral.HarmonicVAE(input_shape=(6, 5), hidden=(8,), latent_dim=2, harmonic=True)
  batch = _batch((6, 5))
  recon = jax.jit(
    lambda b: model.apply(
      train_state.init_variables(model, b, _key(0)), b, rngs=train_state.step_rngs(_key(1), 0)
    )["recon"]
  )(batch)
  assert float(jnp.min(recon)) >= 0.0 and float(jnp.max(recon)) <= 1.0


# ----------------------------------------------------------------------------------------------
# Training lowers spectral_elbo
# ----------------------------------------------------------------------------------------------


def _objective_config():
  c = ml_collections.ConfigDict()
  c.objective = {
    "recon_loss": "weighted_mse",
    "bands": reconstruction.DEFAULT_BANDS,
    "spectral_weight": 0.1,
    "fft_sizes": (),
    "range_weight": 1.0,
  }
  c.kl = {"free_bits": 0.0}
  return c


def _smooth_batch(shape=(16, 16), n=6):
  """Learnable patterns, unlike noise: products of low-frequency sines."""
  f, t = (np.linspace(0, 1, s) for s in shape)
  x = np.stack([np.outer(np.sin(np.pi * (k + 1) * f), np.cos(np.pi * k * t)) for k in range(n)])
  return {"x": jnp.asarray(0.5 + 0.5 * x, jnp.float32), "mask": jnp.ones((n,))}


@pytest.mark.parametrize(
  "model,lr",
  [
    (spectral.SpectralVAE(input_shape=(16, 16), channels=(4, 8), latent_dim=4), 3e-3),
    (
      spectral.HarmonicVAE(input_shape=(16, 16), hidden=(32, 16), latent_dim=4, harmonic=True),
      1e-2,
    ),
  ],
  ids=["spectral_vae", "harmonic_vae"],
)
def test_adam_lowers_spectral_elbo(model, lr):
  batch, config, tx = _smooth_batch(), _objective_config(), optax.adam(lr)
  variables = jax.jit(lambda b: train_state.init_variables(model, b, _key(0)))(batch)
  params = variables["params"]
  state = {k: v for k, v in variables.items() if k != "params"}

  def loss_fn(p, state, i):
    out, new = model.apply(
      {"params": p, **state},
      batch,
      train=True,
      rngs=train_state.step_rngs(_key(3), i),
      mutable=list(state),
    )
    return spectral_variant.spectral_elbo(out, batch, kl_weight=1e-3, config=config)[0], new

  @jax.jit
  def run(params, state):
    def step(carry, i):
      params, state, opt = carry
      (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, i)
      updates, opt = tx.update(grads, opt)
      return (optax.apply_updates(params, updates), state, opt), loss

    return jax.lax.scan(step, (params, state, tx.init(params)), jnp.arange(60))[1]

  losses_seen = np.asarray(run(params, state))
  assert np.all(np.isfinite(losses_seen))
  assert np.mean(losses_seen[-5:]) < 0.6 * losses_seen[0]
