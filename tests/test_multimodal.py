"""The multimodal VAE: shapes, the lyrics reaching the latent, masking of clips without lyrics
(in the model and in the objective), the product of experts, a few real training steps, and
--mode=eval of the split preset (its parts, coherence)."""

import functools
import json
import os

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from conftest import ROOT
from conftest import load_config
from jaxvae import errors
from jaxvae import main as main_lib
from jaxvae.data import dataset
from jaxvae.data import lyrics as lyrics_store
from jaxvae.data.spec import DataSpec
from jaxvae.evaluators import coherence
from jaxvae.evaluators import latents
from jaxvae.models import multimodal
from jaxvae.models import vae
from jaxvae.training import state as train_state
from jaxvae.variants import multimodal as mm_variant

SHAPE = (16, 18)  # 18 is not a multiple of 4: the decoder's resize path runs too.
DIM = 12
N = 8  # one batch size everywhere, so each model is compiled once and shared across tests.


# Tiny models: compiling, not running, is what these tests spend their time on, so XLA's
# backend optimizations are off (about half the compile time on CPU; same maths).
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _key(seed):
  # rbg keys: XLA's RngBitGenerator compiles several times faster than threefry on CPU, and
  # compiling the initializers dominates these tests' time.
  return jax.random.key(seed, impl="rbg")


def _model(fusion, **kw):
  return multimodal.MultimodalVAE(
    input_shape=SHAPE,
    lyrics_dim=DIM,
    channels=(4, 8),
    latent_dim=6,
    lyrics_hidden=(16,),
    fusion=fusion,
    attention_dim=16,
    attention_heads=2,
    **kw,
  )


def _batch(lyrics_mask=None, seed=0):
  kx, kl = jax.random.split(jax.random.PRNGKey(seed))
  mask = jnp.ones((N,)) if lyrics_mask is None else jnp.asarray(lyrics_mask, jnp.float32)
  return {
    "x": jax.random.normal(kx, (N, *SHAPE)),
    "mask": jnp.ones((N,)),
    "lyrics": jax.random.normal(kl, (N, DIM)),
    "lyrics_mask": mask,
  }


@functools.cache
def _variables(fusion):
  """One initialization per fusion, shared by the tests (the module is a static argument)."""
  init = _jit(train_state.init_variables, static_argnums=0)
  return init(_model(fusion), _batch(), _key(1))


@functools.partial(_jit, static_argnums=(0, 3))
def _apply(model, variables, batch, train_mode=False):
  rngs = train_state.step_rngs(_key(2), jnp.int32(0))
  if train_mode:
    return model.apply(variables, batch, train=True, rngs=rngs, mutable=["batch_stats"])[0]
  return model.apply(variables, batch, train=False, rngs=rngs)


def _config(lyrics_loss="mse", lyrics_weight=1.0, free_bits=0.0):
  c = ml_collections.ConfigDict()
  c.objective = {"recon": "mse", "lyrics_loss": lyrics_loss}
  c.model = {"lyrics_weight": lyrics_weight}
  c.kl = {"free_bits": free_bits}
  return c


# ----------------------------------------------------------------------------- model


@pytest.mark.parametrize("fusion", multimodal.FUSIONS)
def test_shapes_and_dtypes(fusion):
  model = _model(fusion)
  batch = _batch(lyrics_mask=[1, 0] * (N // 2))
  variables = _variables(fusion)
  # Train mode by shape only (the training test runs it); eval mode for real.
  train_out = _apply.eval_shape(model, variables, batch, True)
  out = _apply(model, variables, batch)
  for outputs in (train_out, out):
    chex.assert_shape(outputs["recon"], (N, *SHAPE))
    chex.assert_shape(outputs["lyrics_recon"], (N, DIM))
    chex.assert_shape([outputs["mu"], outputs["logvar"], outputs["z"]], (N, 6))
    for key in ("recon", "lyrics_recon", "mu", "logvar", "z"):
      assert outputs[key].dtype == jnp.float32, key
    assert ("mu_audio" in outputs) == (fusion == "poe")
  chex.assert_tree_all_finite(out)


def test_reduced_precision_still_returns_float32():
  """Compute in bfloat16, losses' inputs in float32 (shapes and dtypes only: no compile)."""
  model = _model("attention", dtype=jnp.bfloat16)
  batch = _batch()
  variables = jax.eval_shape(lambda: train_state.init_variables(model, batch, _key(0)))
  out = jax.eval_shape(lambda v: model.apply(v, batch, rngs={"sample": _key(1)}), variables)
  chex.assert_shape(out["recon"], (N, *SHAPE))
  for key in ("recon", "lyrics_recon", "mu", "logvar", "z"):
    assert out[key].dtype == jnp.float32, key
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("fusion", multimodal.FUSIONS)
def test_other_lyrics_other_z_and_missing_lyrics_do_not_matter(fusion):
  """Same audio, different lyrics: the latent moves for clips with lyrics (the first half)
  and not by a bit for clips without (the second half), whatever their lyrics slot holds."""
  model = _model(fusion)
  half = N // 2
  a = _batch(lyrics_mask=[1] * half + [0] * half)
  b = dict(a, lyrics=jax.random.normal(jax.random.PRNGKey(7), (N, DIM)) * 3.0)
  variables = _variables(fusion)
  out_a, out_b = _apply(model, variables, a), _apply(model, variables, b)
  for key in ("mu", "z"):
    moved = np.abs(np.asarray(out_a[key] - out_b[key])).max(axis=-1)
    assert np.all(moved[:half] > 1e-3), (key, moved)
    np.testing.assert_array_equal(out_a[key][half:], out_b[key][half:])
  np.testing.assert_array_equal(out_a["logvar"][half:], out_b["logvar"][half:])
  # The mask itself is information: the same lyrics with and without the mask differ.
  masked = _apply(model, variables, dict(a, lyrics_mask=jnp.zeros((N,))))
  assert np.abs(np.asarray(masked["mu"][:half] - out_a["mu"][:half])).max() > 1e-3


@pytest.mark.parametrize("rate", [0.5, 0.999])
def test_lyrics_dropout_encodes_from_the_audio_alone_in_training_only(rate):
  """model.lyrics_dropout: while training, a dropped clip's posterior ignores its lyrics and
  a kept clip's reads them; about `rate` of the clips are dropped; evaluation reads them
  all. The objective still scores every clip's lyrics (it reads the batch's own mask)."""
  model = _model("concat", lyrics_dropout=rate)
  a = _batch()
  b = dict(a, lyrics=jax.random.normal(jax.random.PRNGKey(7), (N, DIM)) * 3.0)
  variables = _variables("concat")  # the option adds no parameters
  train_a, train_b = _apply(model, variables, a, True), _apply(model, variables, b, True)
  moved = np.abs(np.asarray(train_a["mu"] - train_b["mu"])).max(axis=-1)
  dropped = moved == 0.0
  assert np.all(moved[~dropped] > 1e-3)
  if rate < 0.9:  # N = 8 clips at 0.5: some of each (this key drops 3)
    assert 0 < dropped.sum() < N, dropped
  else:
    assert dropped.all()
  eval_a, eval_b = _apply(model, variables, a), _apply(model, variables, b)
  assert np.all(np.abs(np.asarray(eval_a["mu"] - eval_b["mu"])).max(axis=-1) > 1e-3)
  _, aux = mm_variant.objective(train_a, a, kl_weight=1.0, config=_config())
  assert float(aux["lyrics_term"]) > 0.0  # the caller's batch kept its mask


def _shift_lyrics_params(params):
  """Every parameter that only the lyrics path uses, plus noise (not a constant shift, which
  a LayerNorm would remove)."""
  params = jax.tree.map(lambda v: v, params)  # a copy whose dicts can be replaced
  rng = np.random.default_rng(0)
  noise = lambda v: 0.5 * rng.standard_normal(v.shape).astype(np.float32)
  shift = lambda tree: jax.tree.map(lambda v: v + noise(v), tree)
  for name in ("lyrics_encoder", "lyrics_head"):
    if name in params:
      params[name] = shift(params[name])
  if "attention" in params:
    params["attention"] = dict(
      params["attention"], lyrics_token=shift(params["attention"]["lyrics_token"])
    )
  return params


@pytest.mark.parametrize("fusion", multimodal.FUSIONS)
def test_missing_lyrics_take_no_part_in_the_posterior(fusion):
  """Clips without lyrics are untouched by every lyrics-only parameter: the lyrics expert is
  out of the product, the lyrics token is a padded key, the concat features are zeros."""
  model = _model(fusion)
  half = N // 2
  batch = _batch(lyrics_mask=[1] * half + [0] * half)
  variables = _variables(fusion)
  shifted = dict(variables, params=_shift_lyrics_params(variables["params"]))
  out, out_shifted = _apply(model, variables, batch), _apply(model, shifted, batch)
  assert np.abs(np.asarray(out["mu"][:half] - out_shifted["mu"][:half])).max() > 1e-3
  np.testing.assert_array_equal(out["mu"][half:], out_shifted["mu"][half:])
  np.testing.assert_array_equal(out["logvar"][half:], out_shifted["logvar"][half:])


def test_poe_with_missing_lyrics_is_audio_times_prior():
  model = _model("poe")
  batch = _batch(lyrics_mask=[0, 1] * (N // 2))
  out = jax.tree.map(lambda v: np.asarray(v, np.float64), _apply(model, _variables("poe"), batch))
  prec_a, prec_l = np.exp(-out["logvar_audio"]), np.exp(-out["logvar_lyrics"])
  # Even rows (no lyrics): N(0, 1) x N(mu_a, var_a).
  prec = 1.0 + prec_a[0::2]
  np.testing.assert_allclose(
    out["mu"][0::2], out["mu_audio"][0::2] * prec_a[0::2] / prec, rtol=1e-5, atol=1e-6
  )
  np.testing.assert_allclose(out["logvar"][0::2], -np.log(prec), rtol=1e-5, atol=1e-6)
  # Odd rows (lyrics): all three experts.
  prec = 1.0 + prec_a[1::2] + prec_l[1::2]
  want = (out["mu_audio"][1::2] * prec_a[1::2] + out["mu_lyrics"][1::2] * prec_l[1::2]) / prec
  np.testing.assert_allclose(out["mu"][1::2], want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["logvar"][1::2], -np.log(prec), rtol=1e-5, atol=1e-6)


def test_product_of_experts_is_stable_for_confident_experts():
  """A naive exp(-logvar) overflows at logvar -100; the product must not."""
  mu = jnp.array([[2.0, -1.0]])
  mu_other = jnp.array([[5.0, 5.0]])
  lv = jnp.array([[-100.0, 0.0]])
  lv_other = jnp.array([[0.0, 0.0]])
  got_mu, got_lv = multimodal.product_of_experts(
    [mu, mu_other], [lv, lv_other], [jnp.ones((1,)), jnp.ones((1,))]
  )
  chex.assert_tree_all_finite((got_mu, got_lv))
  np.testing.assert_allclose(got_mu[0, 0], 2.0, rtol=1e-6)  # the confident expert wins
  np.testing.assert_allclose(got_lv[0, 0], -100.0, rtol=1e-6)
  np.testing.assert_allclose(got_mu[0, 1], (-1.0 + 5.0) / 3.0, rtol=1e-6)
  np.testing.assert_allclose(got_lv[0, 1], -np.log(3.0), rtol=1e-6)


def test_missing_lyrics_are_a_clear_error():
  model = _model("concat")
  batch = _batch()
  variables = _variables("concat")
  no_lyrics = {"x": batch["x"], "mask": batch["mask"]}
  with pytest.raises(ValueError, match="data.lyrics_embeddings"):
    _apply(model, variables, no_lyrics)
  with pytest.raises(ValueError, match=r"\[batch, 12\]"):
    _apply(model, variables, dict(batch, lyrics=jnp.ones((N, 5))))
  cfg = ml_collections.ConfigDict({"channels": (4, 8, 8), "latent_dim": 6, "fusion": "poe"})
  with pytest.raises(ValueError, match="set config key data.lyrics_embeddings"):
    multimodal.build_multimodal_vae(cfg, DataSpec(input_shape=SHAPE))
  with pytest.raises(errors.ConfigError, match="set config key data.lyrics_embeddings"):
    mm_variant.build(cfg, DataSpec(input_shape=SHAPE))  # at run time: one line, no traceback
  bad = ml_collections.ConfigDict(dict(cfg.to_dict(), fusion="sum"))
  with pytest.raises(ValueError, match="model.fusion"):
    multimodal.build_multimodal_vae(bad, DataSpec(input_shape=SHAPE, lyrics_dim=DIM))
  built = multimodal.build_multimodal_vae(cfg, DataSpec(input_shape=SHAPE, lyrics_dim=DIM))
  assert (built.lyrics_dim, built.fusion, built.lyrics_hidden) == (DIM, "poe", (256,))


def _param_count(model, shape, lyrics_dim=0):
  batch = {"x": jnp.zeros((2, *shape)), "mask": jnp.ones((2,))}
  if lyrics_dim:
    batch.update(lyrics=jnp.zeros((2, lyrics_dim)), lyrics_mask=jnp.ones((2,)))
  variables = jax.eval_shape(lambda: train_state.init_variables(model, batch, _key(0)))
  return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(variables["params"]))


def test_seed_size_audio_path_is_the_conv_vae():
  """At seed size (128 x 1292, channels (16, 32, 64), latent 128, XLM-R's 768-d vectors) the
  concat model is the conv VAE (63,555,809) plus exactly the lyrics parts."""
  shape, d, h, latent = (128, 1292), 768, 256, 128
  conv = _param_count(vae.ConvVAE(input_shape=shape), shape)
  model = multimodal.MultimodalVAE(input_shape=shape, lyrics_dim=d)
  lyrics_encoder = d * h + h + 2 * h  # Dense + LayerNorm
  lyrics_decoder = latent * h + h + 2 * h + h * d + d
  head_inputs = (h + 1) * latent * 2  # lyrics features + the mask, into mu and logvar
  assert _param_count(model, shape, d) == conv + lyrics_encoder + lyrics_decoder + head_inputs


# ----------------------------------------------------------------------------- objective


def _objective_case():
  """3 clips of 2 x 3 bins (n_audio 6) and 2-d lyrics; clip 1 has no lyrics, clip 2 is
  batch padding. Audio error 1 per bin -> recon 6 per clip."""
  batch = {
    "x": jnp.zeros((3, 2, 3)),
    "mask": jnp.array([1.0, 1.0, 0.0]),
    "lyrics": jnp.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]),
    "lyrics_mask": jnp.array([1.0, 0.0, 1.0]),
  }
  outputs = {
    "recon": jnp.ones((3, 2, 3)),
    "mu": jnp.zeros((3, 4)),
    "logvar": jnp.zeros((3, 4)),
    "lyrics_recon": jnp.array([[0.0, 1.0], [7.0, -7.0], [9.0, 9.0]]),
  }
  return outputs, batch


def test_objective_masks_lyrics_of_clips_without_lyrics():
  outputs, batch = _objective_case()
  loss, m = mm_variant.objective(
    outputs, batch, kl_weight=1.0, config=_config("mse", lyrics_weight=0.5)
  )
  # Only clip 0 has a lyrics error: (0 - 1)^2 + (1 - 0)^2 = 2; balance n_audio / D = 6 / 2;
  # averaged over the 2 real clips.
  want_term = 0.5 * 3.0 * 2.0 / 2.0
  np.testing.assert_allclose(m["recon"], 6.0, rtol=1e-6)
  np.testing.assert_allclose(m["lyrics_recon"], 2.0, rtol=1e-6)
  np.testing.assert_allclose(m["lyrics_term"], want_term, rtol=1e-6)
  np.testing.assert_allclose(loss, 6.0 + want_term, rtol=1e-6)
  np.testing.assert_allclose(m["recon_mse"], 1.0, rtol=1e-6)
  # Whatever is predicted for the clip without lyrics (or the padding clip) changes nothing.
  nan_out = dict(outputs, lyrics_recon=outputs["lyrics_recon"].at[1:].set(jnp.nan))
  loss_nan, _ = mm_variant.objective(
    nan_out, batch, kl_weight=1.0, config=_config("mse", lyrics_weight=0.5)
  )
  np.testing.assert_allclose(loss_nan, loss, rtol=1e-7)
  # Weight 0: lyrics are an input only.
  loss0, _ = mm_variant.objective(
    outputs, batch, kl_weight=1.0, config=_config("mse", lyrics_weight=0.0)
  )
  np.testing.assert_allclose(loss0, 6.0, rtol=1e-6)


def test_objective_cosine_and_kl():
  outputs, batch = _objective_case()
  outputs = dict(outputs, mu=jnp.ones((3, 4)))  # KL 0.5 per dimension -> 2 per clip
  loss, m = mm_variant.objective(
    outputs, batch, kl_weight=0.25, config=_config("cosine", lyrics_weight=1.0)
  )
  # Clip 0: (0, 1) vs (1, 0) -> 1 - cos = 1; balance n_audio = 6; over 2 real clips.
  np.testing.assert_allclose(m["lyrics_recon"], 1.0, rtol=1e-6)
  np.testing.assert_allclose(m["lyrics_term"], 6.0 * 1.0 / 2.0, rtol=1e-6)
  np.testing.assert_allclose(m["kl"], 2.0, rtol=1e-6)
  np.testing.assert_allclose(loss, 6.0 + 3.0 + 0.25 * 2.0, rtol=1e-6)
  same = dict(outputs, lyrics_recon=batch["lyrics"] * 3.0)  # cosine ignores the scale
  _, m_same = mm_variant.objective(same, batch, kl_weight=0.25, config=_config("cosine"))
  np.testing.assert_allclose(m_same["lyrics_term"], 0.0, atol=1e-6)


# ----------------------------------------------------------------------------- training


def _label_batch():
  """8 clips in 4 pairs: the two clips of a pair have the same audio (a smooth pattern) and
  lyrics from different labels (one of two prototypes + noise). Only the lyrics can tell the
  label, so a model that does not use them has identical latents within each pair."""
  t, u = jnp.linspace(0, 1, SHAPE[0]), jnp.linspace(0, 1, SHAPE[1])
  patterns = jnp.stack(
    [jnp.outer(jnp.sin(2 * np.pi * (k + 1) * t), jnp.cos(np.pi * k * u)) for k in range(N // 2)]
  )
  x = jnp.repeat(patterns, 2, axis=0)
  labels = np.array([0, 1] * (N // 2))
  kp, kn = jax.random.split(jax.random.PRNGKey(11))
  lyrics = jax.random.normal(kp, (2, DIM))[labels] + 0.1 * jax.random.normal(kn, (N, DIM))
  batch = {"x": x, "mask": jnp.ones((N,)), "lyrics": lyrics, "lyrics_mask": jnp.ones((N,))}
  return batch, labels


def _group_distance(mu, labels):
  """Distance between the two label groups' mean mu."""
  mu = np.asarray(mu)
  return np.linalg.norm(mu[labels == 0].mean(0) - mu[labels == 1].mean(0))


def _adam_step(model, tx):
  """One jitted Adam step on the multimodal objective."""
  config = _config("mse")

  @_jit
  def step(params, state, opt, i, batch):
    def loss_fn(p):
      out, new = model.apply(
        {"params": p, **state},
        batch,
        train=True,
        rngs=train_state.step_rngs(_key(3), i),
        mutable=["batch_stats"],
      )
      return mm_variant.objective(out, batch, kl_weight=0.1, config=config)[0], new

    (loss, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt = tx.update(grads, opt)
    return optax.apply_updates(params, updates), new, opt, loss

  return step


def _train(step, tx, variables, batch, steps=60):
  """`steps` Adam steps on one fixed batch; returns (losses, trained variables)."""
  params, state = variables["params"], {"batch_stats": variables["batch_stats"]}
  opt = tx.init(params)
  losses = []
  for i in range(steps):
    params, state, opt, loss = step(params, state, opt, i, batch)
    losses.append(loss)
  return np.asarray(jax.device_get(losses)), {"params": params, **state}  # one host sync


@pytest.mark.parametrize("fusion", multimodal.FUSIONS)
def test_training_lowers_the_loss_and_separates_the_lyrics_groups(fusion):
  """A few Adam steps: the loss falls, and the latent means of the two lyrics groups move
  apart (with the lyrics not fed, as in seed 000, they would coincide: see _label_batch)."""
  model = _model(fusion)
  batch, labels = _label_batch()
  variables = _variables(fusion)
  tx = optax.adam(3e-3)
  dist_before = _group_distance(_apply(model, variables, batch)["mu"], labels)
  losses, trained = _train(_adam_step(model, tx), tx, variables, batch)
  dist_after = _group_distance(_apply(model, trained, batch)["mu"], labels)
  assert losses[-5:].mean() < 0.5 * losses[:5].mean(), losses
  assert dist_after > 1.3 * dist_before and dist_after > 2.0, (dist_before, dist_after)


def test_objective_aligns_the_audio_encoder_with_the_lyrics_posterior():
  """lyrics_from_audio: KL(q(z_l | lyrics) || q(z_l | audio)) over the real clips whose
  lyrics were read, times its weight; the lyrics' side gets no gradient from it."""
  outputs, batch = _objective_case()
  base, _ = mm_variant.objective(outputs, batch, kl_weight=1.0, config=_config("mse"))
  cross = {
    "mu_lyrics": jnp.array([[1.0, 0.0], [0.0, 0.0], [5.0, 5.0]]),
    "logvar_lyrics": jnp.zeros((3, 2)),
    "mu_lyrics_from_audio": jnp.zeros((3, 2)),
    "logvar_lyrics_from_audio": jnp.zeros((3, 2)),
    "lyrics_present": batch["lyrics_mask"],
  }
  config = _config("mse")
  config.model.lyrics_from_audio_weight = 2.0
  loss, m = mm_variant.objective(outputs | cross, batch, kl_weight=1.0, config=config)
  # Only clip 0 counts (clip 1 has no lyrics, clip 2 is padding): KL = 0.5 * 1^2.
  np.testing.assert_allclose(m["lyrics_from_audio_kl"], 0.5, rtol=1e-6)
  np.testing.assert_allclose(loss, base + 2.0 * 0.5, rtol=1e-6)

  def term(mu_l, mu_a):
    out = outputs | cross | {"mu_lyrics": mu_l, "mu_lyrics_from_audio": mu_a}
    return mm_variant.objective(out, batch, kl_weight=1.0, config=config)[1]["lyrics_from_audio_kl"]

  g_lyrics, g_audio = jax.grad(term, argnums=(0, 1))(
    cross["mu_lyrics"], cross["mu_lyrics_from_audio"]
  )
  assert not np.asarray(g_lyrics).any()
  np.testing.assert_allclose(g_audio, [[-1.0, 0.0], [0.0, 0.0], [0.0, 0.0]], atol=1e-6)


def test_lyrics_from_audio_fills_missing_lyrics_and_learns_them_from_the_audio():
  """A split model with lyrics_from_audio: clips with lyrics are encoded as without it;
  a clip without lyrics takes its lyrics dimensions from the audio (not the prior), and
  after training on clips whose audio tells their lyrics' label, the lyrics dimensions
  inferred from the audio alone separate the two labels as the lyrics' own do."""
  model = _model("split", lyrics_from_audio=True)
  t, u = jnp.linspace(0, 1, SHAPE[0]), jnp.linspace(0, 1, SHAPE[1])
  labels = np.array([0, 1] * (N // 2))
  x = jnp.stack([jnp.outer(jnp.sin(2 * np.pi * (1 + 2 * k) * t), u) for k in labels])
  x = x + 0.1 * jax.random.normal(jax.random.PRNGKey(5), x.shape)
  kp, kn = jax.random.split(jax.random.PRNGKey(11))
  lyrics = jax.random.normal(kp, (2, DIM))[labels] + 0.1 * jax.random.normal(kn, (N, DIM))
  batch = {"x": x, "mask": jnp.ones((N,)), "lyrics": lyrics, "lyrics_mask": jnp.ones((N,))}
  alone = dict(batch, lyrics_mask=jnp.zeros((N,)))
  init = _jit(train_state.init_variables, static_argnums=0)
  variables = init(model, batch, _key(1))
  plain = _apply(_model("split"), variables, batch)
  with_lyrics, without = _apply(model, variables, batch), _apply(model, variables, alone)
  np.testing.assert_array_equal(with_lyrics["mu"], plain["mu"])
  np.testing.assert_array_equal(without["mu"][:, -4:], without["mu_lyrics_from_audio"])
  assert np.abs(np.asarray(without["mu"][:, -4:])).min() > 0  # not the prior's 0
  tx = optax.adam(3e-3)
  losses, trained = _train(_adam_step(model, tx), tx, variables, batch)
  assert losses[-5:].mean() < 0.5 * losses[:5].mean(), losses
  gap = lambda own, guess: float(np.linalg.norm(np.asarray(own - guess), axis=-1).mean())
  before = gap(with_lyrics["mu"][:, -4:], without["mu"][:, -4:])
  own, guess = (_apply(model, trained, b)["mu"][:, -4:] for b in (batch, alone))
  assert gap(own, guess) < 0.3 * before, (before, gap(own, guess))
  # Each guess is nearest to its own label's centroid of the lyrics' dimensions.
  centroids = np.stack([np.asarray(own)[labels == c].mean(0) for c in (0, 1)])
  nearest = np.argmin(np.linalg.norm(np.asarray(guess)[:, None] - centroids, axis=-1), axis=1)
  np.testing.assert_array_equal(nearest, labels)


def test_lyrics_from_audio_with_dropout_and_nan_lyrics_keeps_the_step_finite():
  """Modality dropout on top of lyrics_from_audio, clips without lyrics holding NaN: the
  loss and every gradient stay finite, and the alignment only counts the clips whose lyrics
  the encoder read (`lyrics_present`, after dropout)."""
  model = _model("split", lyrics_from_audio=True, lyrics_dropout=0.5)
  half = N // 2
  batch = _batch(lyrics_mask=[1] * half + [0] * half)
  batch["lyrics"] = batch["lyrics"].at[half:].set(jnp.nan)
  init = _jit(train_state.init_variables, static_argnums=0)
  variables = init(model, dict(batch, lyrics=jnp.nan_to_num(batch["lyrics"])), _key(1))

  @_jit
  def loss_and_grads(params):
    def loss_fn(p):
      out = model.apply(
        {"params": p, "batch_stats": variables["batch_stats"]},
        batch,
        train=True,
        rngs=train_state.step_rngs(_key(4), jnp.int32(0)),
        mutable=["batch_stats"],
      )[0]
      loss, m = mm_variant.objective(out, batch, kl_weight=1.0, config=_config("cosine"))
      return loss, (m, out["lyrics_present"])

    return jax.value_and_grad(loss_fn, has_aux=True)(params)

  (loss, (metrics, present)), grads = loss_and_grads(variables["params"])
  assert np.isfinite(float(loss)) and np.isfinite(float(metrics["lyrics_from_audio_kl"]))
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
  present = np.asarray(present)
  assert not present[half:].any() and 0 < present[:half].sum() < half  # some dropped


def test_validate_names_the_config_key():
  def config(**model):
    c = ml_collections.ConfigDict(
      {
        "model": {"fusion": "poe", "lyrics_weight": 1.0},
        "objective": {"lyrics_loss": "cosine"},
        "data": {"lyrics_embeddings": ""},
      }
    )
    c.model.update(model)
    return c

  mm_variant.validate(config())  # no embeddings yet is fine: tools/embed_lyrics.py needs this
  with pytest.raises(ValueError, match="model.fusion"):
    mm_variant.validate(config(fusion="sum"))
  with pytest.raises(ValueError, match="model.lyrics_weight"):
    mm_variant.validate(config(lyrics_weight=-1.0))
  mm_variant.validate(config(fusion="split", latent_dim=8, lyrics_latent_dim=2))
  # eval clusters the split latent's parts one by one; a fused latent has none.
  parts = mm_variant.latent_parts(config(fusion="split", latent_dim=8, lyrics_latent_dim=2))
  assert parts == {"audio": (0, 6), "lyrics": (6, 8)} and mm_variant.latent_parts(config()) == {}
  mm_variant.validate(config(lyrics_dropout=0.5))
  for drop in (-0.1, 1.0, 1.5, "half"):
    with pytest.raises(ValueError, match="model.lyrics_dropout"):
      mm_variant.validate(config(lyrics_dropout=drop))
  mm_variant.validate(config(fusion="split", latent_dim=8, lyrics_from_audio=True))
  with pytest.raises(ValueError, match="model.lyrics_from_audio' needs model.fusion 'split'"):
    mm_variant.validate(config(lyrics_from_audio=True))
  with pytest.raises(ValueError, match="model.lyrics_from_audio' is 'yes'"):
    mm_variant.validate(config(fusion="split", latent_dim=8, lyrics_from_audio="yes"))
  with pytest.raises(ValueError, match="model.lyrics_from_audio_weight"):
    mm_variant.validate(config(fusion="split", latent_dim=8, lyrics_from_audio_weight=-1))
  for dims in (0, 8, 2.5):
    with pytest.raises(ValueError, match="model.lyrics_latent_dim"):
      mm_variant.validate(config(fusion="split", latent_dim=8, lyrics_latent_dim=dims))
  bad_loss = config()
  bad_loss.objective.lyrics_loss = "l1"
  with pytest.raises(ValueError, match="objective.lyrics_loss"):
    mm_variant.validate(bad_loss)


# ----------------------------------------------------------------------------- eval


def test_centroid_accuracy_judges_each_source_by_the_real_lyrics_centroids():
  reference = np.array([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0], [0.1, 3.0], [5.0, 5.0]])
  ref_labels = np.array([0, 0, 1, 1, -1])  # the unknown one is no centroid's
  queries = {"good": np.array([[3.0, 0.0], [0.0, 2.0]]), "swapped": np.array([[0, 1.0], [1.0, 0]])}
  got = coherence.centroid_accuracy(reference, ref_labels, queries, np.array([0, 1]))
  assert got == {"good": 1.0, "swapped": 0.0, "n": 2, "chance": 0.5}
  # A query whose label no centroid has is not scored; one class is no test.
  got = coherence.centroid_accuracy(reference, ref_labels, queries, np.array([0, 7]))
  assert got["n"] == 1 and got["good"] == 1.0
  assert coherence.centroid_accuracy(reference, np.zeros(5, int), queries, np.zeros(2)) is None


def test_eval_of_a_split_run_scores_each_part_and_lyrics_decoded_from_the_audio(
  tiny_overrides, tmp_path
):
  """--mode=eval of the `small` preset (split fusion) on the demo corpus with lyrics
  embeddings that tell the language: the lyrics part clusters by language on its own, the
  parts are named with their dimensions, and the lyrics decoded from the audio alone are
  judged by the real lyrics' language centroids (whose own accuracy is 1 here)."""
  overrides = dict(tiny_overrides, **{"eval.plots": "", "train.image_every_epochs": "0"})
  store = dataset.open_store(load_config("multimodal_vae.py:small", overrides), progress=False)
  language = store.label_array("language")
  of_clip = {e["clip_id"]: int(language[i]) for i, e in enumerate(store.manifest["examples"])}
  clips = sorted(of_clip)
  noise = np.random.default_rng(0).normal(scale=0.1, size=(len(clips), DIM))
  vectors = 3.0 * np.eye(DIM)[[of_clip[c] for c in clips]] + noise
  emb = str(tmp_path / "lyrics")
  lyrics_store.write_embeddings(emb, clips, vectors, info={"model": "test", "pooling": "mean"})
  overrides["data.lyrics_embeddings"] = emb
  args = ["--config=configs/multimodal_vae.py:small", f"--workdir={tmp_path / 'run'}"]
  args += ["--no_progress"] + [f"--config.{k}={v}" for k, v in overrides.items()]
  cwd = os.getcwd()
  os.chdir(ROOT)
  try:
    assert main_lib.run(args) == 0 and main_lib.run(args + ["--mode=eval"]) == 0
  finally:
    os.chdir(cwd)
  metrics = json.load(open(tmp_path / "run" / "eval" / "metrics.json"))
  parts = metrics["latent_parts"]
  assert parts["audio"]["dims"] == [0, 4] and parts["lyrics"]["dims"] == [4, 8]
  assert parts["lyrics"]["language"]["nmi"] > 0.9 and "linear_probe" in parts["audio"]["genre"]
  co = metrics["coherence"]
  assert co["available"] and co["split"] == "validation"
  assert co["language"]["real"] == 1.0 and co["language"]["n"] == len(store.indices("validation"))
  assert set(co["language"]) == {"real", "joint", "audio_only", "n", "chance"}
  scalars = latents.Latents(None, "").scalars(metrics)  # what TensorBoard gets under eval/
  assert scalars["eval/coherence_language"] == co["language"]["audio_only"]
  # The preset infers the lyrics dimensions from the audio, trained by the alignment term.
  run = json.load(open(tmp_path / "run" / "jaxvae_run.json"))
  assert run["config"]["model"]["lyrics_from_audio"] is True
  assert '"train/lyrics_from_audio_kl"' in open(tmp_path / "run" / "metrics.jsonl").read()
