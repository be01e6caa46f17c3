"""Tests of the vector quantizer, the puzzle VQ-VAE (seed 004) and the VQ objective."""

import functools
import types

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxvae.models import vq as vq_lib
from jaxvae.models import vqvae as vqvae_lib
from jaxvae.models.vq import VectorQuantizer
from jaxvae.models.vq import kmeans_init
from jaxvae.models.vq import with_codebook
from jaxvae.models.vqvae import PuzzleVQVAE
from jaxvae.models.vqvae import build_puzzle_vqvae
from jaxvae.variants.puzzle_vq import objective as vq_objective

# A miniature of the seed model: same layer structure, compiles and runs in a fraction of the
# time. The full-size model is only traced (jax.eval_shape), never compiled, in these tests.
TINY = dict(num_codes=4, code_dim=8, grid=(6, 6), enc_channels=(4, 8), dec_channels=(8, 4, 4))


def _count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def _batch(b=2, h=16, w=8, seed=0):
  rng = np.random.default_rng(seed)
  return {"x": rng.uniform(size=(b, h, w)).astype(np.float32), "mask": np.ones(b, np.float32)}


def _key(seed=0):
  # The 'rbg' generator compiles several times faster than threefry on CPU, and model.init
  # compiles one generator per parameter; the tests only need some random initialization.
  return jax.random.key(seed, impl="rbg")


def _abstract_init(model, batch):
  """Variables as shapes only: traces the model without compiling it."""
  return jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), batch)


def _init(model, batch):
  return jax.jit(functools.partial(model.init, train=False))(_key(), batch)


@functools.cache
def _tiny_variables():
  """Variables of PuzzleVQVAE(**TINY), shared by tests (the same for every dtype and batch)."""
  return _init(PuzzleVQVAE(**TINY), _batch(2, 16, 8))


def _run(module, variables, *args, **kwargs):
  """Jitted apply: one compile instead of one per operation."""
  return jax.jit(functools.partial(module.apply, **kwargs))(variables, *args)


def _vq_variables(module, codebook, z):
  variables = _init(module, z)
  return with_codebook(variables, np.asarray(codebook, np.float32))


# ----------------------------------------------------------------------------------------------
# The seed model: parameter counts and shapes.


def test_parameter_counts_match_seed_004():
  variables = _abstract_init(PuzzleVQVAE(), _batch(1, 128, 32))
  params = variables["params"]
  assert _count(params["encoder"]) == 37_728
  assert _count(params["vq"]) == 640
  assert _count(params["decoder"]) == 45_409
  assert _count(params) == 83_777
  # BatchNorm running statistics are state, not parameters: 2 per channel of 5 BN layers.
  assert _count(variables["batch_stats"]) == 2 * (32 + 64 + 64 + 32 + 16)


def test_ema_codebook_is_state_not_parameter():
  variables = _abstract_init(PuzzleVQVAE(use_ema=True), _batch(1, 128, 32))
  assert "vq" not in variables["params"]
  assert _count(variables["params"]) == 83_777 - 640
  chex.assert_shape(variables["vq_stats"]["vq"]["codebook"], (10, 64))


@pytest.mark.parametrize("shape", [(128, 32), (64, 16), (40, 24)])
def test_output_shapes(shape):
  model = PuzzleVQVAE()
  batch = _batch(3, *shape)
  variables = _abstract_init(model, batch)
  out, state = jax.eval_shape(
    lambda v, b: model.apply(v, b, train=True, mutable=["batch_stats"]), variables, batch
  )
  chex.assert_shape(out["recon"], (3, *shape))
  chex.assert_shape(out["codes"], (3, 30, 30))
  chex.assert_shape(out["code_counts"], (10,))
  for key in ("vq_loss", "codebook_loss", "commitment_loss", "perplexity"):
    chex.assert_shape(out[key], ())
    assert out[key].dtype == jnp.float32
  assert out["recon"].dtype == jnp.float32 and out["codes"].dtype == jnp.int32
  chex.assert_trees_all_equal_shapes(state["batch_stats"], variables["batch_stats"])


@pytest.mark.parametrize("hw", [(128, 32), (40, 24), (150, 130)])
def test_the_decoders_last_conv_before_its_resize_is_the_seeds_order(hw):
  """The decoder applies its pointwise output convolution (16 -> 1 channels) before the
  bilinear resize to the input's size, the seed after it: the same map up to float rounding
  (both linear, the resize's weights summing to one, so the bias passes through), 16 times
  less to resize. The decoder's output against the seed's order from the same parameters
  and the features its last convolution reads."""
  decoder = vqvae_lib.Decoder()
  z = jax.random.normal(jax.random.PRNGKey(0), (2, 30, 30, 64))
  variables = decoder.init(jax.random.PRNGKey(1), z, hw, train=False)
  final = variables["params"]["Conv_1"]
  final["bias"] = final["bias"] + 0.3  # a bias that must pass through the resize
  seen = {}

  def spy(next_fun, args, kwargs, context):
    if context.module.name == "Conv_1" and context.method_name == "__call__":
      seen["features"] = args[0]  # [2, 120, 120, 16], before the resize
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(spy):
    got = decoder.apply(variables, z, hw, train=False)
  seed = vqvae_lib._resize(seen["features"], hw)
  seed = jnp.einsum("bhwc,co->bhwo", seed, final["kernel"][0, 0]) + final["bias"]
  assert seen["features"].shape == (2, 120, 120, 16) and got.shape == (2, *hw)
  np.testing.assert_allclose(np.asarray(got), np.asarray(jax.nn.sigmoid(seed[..., 0])), atol=1e-5)


def test_tiny_forward_values_and_bfloat16():
  batch = _batch(2, 16, 8)
  for dtype in (jnp.float32, jnp.bfloat16):
    model = PuzzleVQVAE(**TINY, dtype=dtype)
    variables = _tiny_variables()
    if dtype == jnp.bfloat16:  # parameters stay float32 whatever the compute dtype
      chex.assert_trees_all_equal_shapes_and_dtypes(_abstract_init(model, batch), variables)
    out, _ = _run(model, variables, batch, train=True, mutable=["batch_stats"])
    chex.assert_shape(out["recon"], (2, 16, 8))
    chex.assert_shape(out["codes"], (2, 6, 6))
    assert out["recon"].dtype == jnp.float32 and out["vq_loss"].dtype == jnp.float32
    assert np.all((np.asarray(out["recon"]) > 0) & (np.asarray(out["recon"]) < 1))
    assert float(np.sum(out["code_counts"])) == 2 * 36
    chex.assert_tree_all_finite(out)
  # `encode` (used to gather data for kmeans_init) gives the vectors the codes quantize.
  model = PuzzleVQVAE(**TINY)
  z = _run(model, variables, batch, train=False, method="encode")
  chex.assert_shape(z, (2, 6, 6, 8))
  codes = vq_lib.nearest_codes(z.reshape(-1, 8), variables["params"]["vq"]["codebook"])
  np.testing.assert_array_equal(
    codes.reshape(2, 6, 6), _run(model, variables, batch, train=False)["codes"]
  )


def test_build_from_config():
  cfg = ml_collections.ConfigDict(
    dict(
      name="puzzle_vqvae", num_codes=12, code_dim=16, grid=(8, 8), use_ema=True, dtype="bfloat16"
    )
  )
  model = build_puzzle_vqvae(cfg, types.SimpleNamespace(input_shape=(128, 32)))
  assert (model.num_codes, model.code_dim, model.grid, model.use_ema) == (12, 16, (8, 8), True)
  assert model.dtype == jnp.bfloat16 and model.enc_channels == (32, 64)
  with pytest.raises(ValueError, match="input_shape"):
    build_puzzle_vqvae(cfg, types.SimpleNamespace(input_shape=(2, 32)))


# ----------------------------------------------------------------------------------------------
# The quantizer.


def test_nearest_code_matches_bruteforce_argmin():
  rng = np.random.default_rng(1)
  codebook = rng.normal(size=(7, 5)).astype(np.float32)
  z = rng.normal(size=(3, 4, 6, 5)).astype(np.float32)
  module = VectorQuantizer(num_codes=7, code_dim=5)
  out = _run(module, _vq_variables(module, codebook, z), z, train=False)
  brute = np.argmin(((z[..., None, :] - codebook) ** 2).sum(-1), axis=-1)
  np.testing.assert_array_equal(out["codes"], brute)
  np.testing.assert_allclose(out["quantized"], codebook[brute], atol=1e-6)
  np.testing.assert_array_equal(out["code_counts"], np.bincount(brute.ravel(), minlength=7))


def test_perplexity_uniform_and_single_code():
  codebook = np.eye(4, 3, dtype=np.float32) * 5.0
  module = VectorQuantizer(num_codes=4, code_dim=3)
  uniform = np.tile(codebook, (6, 1))  # every code used 6 times
  variables = _vq_variables(module, codebook, uniform)
  out = _run(module, variables, uniform, train=False)
  np.testing.assert_allclose(out["perplexity"], 4.0, rtol=1e-5)
  np.testing.assert_array_equal(out["code_counts"], [6, 6, 6, 6])
  single = np.tile(codebook[2:3] + 0.1, (24, 1))
  out = _run(module, variables, single, train=False)
  np.testing.assert_allclose(out["perplexity"], 1.0, rtol=1e-6)
  np.testing.assert_array_equal(out["code_counts"], [0, 0, 24, 0])


def test_mask_excludes_padded_examples():
  codebook = np.eye(2, 2, dtype=np.float32)
  module = VectorQuantizer(num_codes=2, code_dim=2)
  z = np.stack([np.tile(codebook[0], (3, 1)), np.tile(codebook[1] * 9.0, (3, 1))])
  variables = _vq_variables(module, codebook, z)
  out = _run(module, variables, z, train=False, mask=np.array([1.0, 0.0]))
  np.testing.assert_array_equal(out["code_counts"], [3, 0])
  np.testing.assert_allclose(out["commitment_loss"], 0.0, atol=1e-7)  # padding's error ignored
  np.testing.assert_allclose(out["perplexity"], 1.0)


def test_losses_and_straight_through_in_the_quantizer():
  rng = np.random.default_rng(2)
  codebook = rng.normal(size=(4, 3)).astype(np.float32)
  z = rng.normal(size=(10, 3)).astype(np.float32)
  module = VectorQuantizer(num_codes=4, code_dim=3, commitment_cost=0.25)
  params = _vq_variables(module, codebook, z)["params"]

  def term(name):
    return lambda p, z: module.apply({"params": p}, z, train=False)[name]

  out = _run(module, {"params": params}, z, train=False)
  q = codebook[out["codes"]]
  np.testing.assert_allclose(out["codebook_loss"], np.mean((z - q) ** 2), rtol=1e-5)
  np.testing.assert_allclose(out["vq_loss"], 1.25 * np.mean((z - q) ** 2), rtol=1e-5)
  # Codebook loss trains only the codebook, commitment loss only the encoder side.
  g_p, g_z = jax.jit(jax.grad(term("codebook_loss"), argnums=(0, 1)))(params, z)
  assert np.abs(g_p["codebook"]).sum() > 0 and np.abs(g_z).sum() == 0
  g_p, g_z = jax.jit(jax.grad(term("commitment_loss"), argnums=(0, 1)))(params, z)
  assert np.abs(g_p["codebook"]).sum() == 0 and np.abs(g_z).sum() > 0
  # Straight-through: d sum(quantized) / dz is the identity.
  g_p, g_z = jax.jit(jax.grad(lambda p, z: jnp.sum(term("quantized")(p, z)), argnums=(0, 1)))(
    params, z
  )
  np.testing.assert_array_equal(g_z, np.ones_like(z))
  assert np.abs(g_p["codebook"]).sum() == 0


def test_model_gradients_reach_encoder_through_the_quantizer():
  model = PuzzleVQVAE(**TINY)
  batch = _batch(2, 16, 8)
  variables = _tiny_variables()

  @functools.partial(jax.jit, static_argnums=1)
  @functools.partial(jax.grad)
  def grad(params, name):
    out, _ = model.apply(
      {**variables, "params": params}, batch, train=True, mutable=["batch_stats"]
    )
    if name == "recon":
      return jnp.mean(jnp.square(out["recon"] - batch["x"]))
    return out[name]

  grads = grad(variables["params"], "recon")
  assert _abs_sum(grads["encoder"]) > 0 and _abs_sum(grads["decoder"]) > 0
  assert _abs_sum(grads["vq"]) == 0  # the codebook learns only from the codebook loss
  grads = grad(variables["params"], "vq_loss")
  assert _abs_sum(grads["vq"]) > 0 and _abs_sum(grads["decoder"]) == 0


def _abs_sum(tree) -> float:
  return float(sum(np.abs(np.asarray(g)).sum() for g in jax.tree_util.tree_leaves(tree)))


def test_ema_moves_codes_toward_assigned_means():
  decay, eps = 0.5, 1e-5
  module = VectorQuantizer(num_codes=2, code_dim=2, use_ema=True, ema_decay=decay, ema_eps=eps)
  codebook = np.array([[0.0, 0.0], [10.0, 10.0]], np.float32)
  z = np.array([[1.0, 1.0], [2.0, 2.0], [9.0, 9.0]], np.float32)
  variables = _vq_variables(module, codebook, z)
  assert "params" not in variables  # nothing for the optimizer: no gradient-learned codebook

  out, state = _run(module, variables, z, train=True, mutable=["vq_stats"])
  # Cluster sizes start at 1 with embed_sum = codebook; then one EMA step by hand.
  sizes = decay * 1.0 + (1 - decay) * np.array([2.0, 1.0])
  sums = decay * codebook + (1 - decay) * np.array([[3.0, 3.0], [9.0, 9.0]])
  smoothed = (sizes + eps) / (sizes.sum() + 2 * eps) * sizes.sum()
  stats = state["vq_stats"]
  np.testing.assert_allclose(stats["cluster_size"], sizes, rtol=1e-6)
  np.testing.assert_allclose(stats["codebook"], sums / smoothed[:, None], rtol=1e-4)
  new = np.asarray(stats["codebook"])
  means = np.array([[1.5, 1.5], [9.0, 9.0]])
  assert np.all(np.linalg.norm(new - means, axis=1) < np.linalg.norm(codebook - means, axis=1))
  # The codebook term is dropped: EMA, not the loss, moves the codes.
  np.testing.assert_allclose(out["vq_loss"], 0.25 * out["commitment_loss"], rtol=1e-6)
  # No update outside training, nor when the collection is not mutable.
  _, state = _run(module, variables, z, train=False, mutable=["vq_stats"])
  chex.assert_trees_all_close(state["vq_stats"], variables["vq_stats"])
  _run(module, variables, z, train=True)


def test_dead_code_restart_replaces_unused_code():
  module = VectorQuantizer(num_codes=3, code_dim=2, use_ema=True, dead_code_threshold=0.5)
  codebook = np.array([[0.0, 0.0], [1.0, 1.0], [100.0, 100.0]], np.float32)
  rng = np.random.default_rng(3)
  z = rng.normal(size=(2, 4, 2)).astype(np.float32) * 0.3
  z[1] += 50.0  # the padded example: restarts must not pick it
  variables = _vq_variables(module, codebook, z)
  stats = dict(variables["vq_stats"])
  stats["cluster_size"] = jnp.array([1.0, 1.0, 0.1])  # code 2 has (almost) never been used
  variables = {"vq_stats": stats}
  _, state = _run(
    module,
    variables,
    z,
    train=True,
    mask=np.array([1.0, 0.0]),
    mutable=["vq_stats"],
    rngs={"vq": _key()},
  )
  new = np.asarray(state["vq_stats"]["codebook"])
  assert np.min(np.abs(z[0] - new[2]).sum(-1)) < 1e-4  # now one of the real batch vectors
  assert np.all(np.abs(new[:2] - codebook[:2]) < 1.0)  # live codes are only EMA-updated
  np.testing.assert_allclose(state["vq_stats"]["cluster_size"][2], 0.5)


def test_dead_code_threshold_needs_ema():
  with pytest.raises(ValueError, match="use_ema"):
    VectorQuantizer(num_codes=2, code_dim=2, dead_code_threshold=1.0).init(
      jax.random.key(0), np.zeros((3, 2), np.float32), train=False
    )


def test_kmeans_init_finds_separated_clusters_and_with_codebook_writes_it():
  rng = np.random.default_rng(4)
  centers = np.array([[5, 0, 0], [-5, 0, 0], [0, 5, 0], [0, 0, -5]], np.float32)
  points = (centers[:, None, :] + 0.05 * rng.normal(size=(4, 50, 3))).reshape(-1, 3)
  found = kmeans_init(rng.permutation(points), 4, iters=10, seed=0)
  chex.assert_shape(found, (4, 3))
  # Match each true center to its nearest found center: all distinct and close.
  nearest = np.argmin(((centers[:, None] - found[None]) ** 2).sum(-1), axis=1)
  assert len(set(nearest.tolist())) == 4
  np.testing.assert_allclose(found[nearest], centers, atol=0.05)

  model = PuzzleVQVAE(**{**TINY, "code_dim": 3})
  variables = _abstract_init(model, _batch(1))
  updated = with_codebook(variables, found)
  np.testing.assert_array_equal(updated["params"]["vq"]["codebook"], found)
  with pytest.raises(ValueError, match="shape"):
    with_codebook(variables, found[:3])


# ----------------------------------------------------------------------------------------------
# The objective and a short training run.


def test_objective_masks_padded_examples():
  x = np.zeros((2, 4, 3), np.float32)
  recon = np.stack([np.full((4, 3), 0.5), np.full((4, 3), 9.0)]).astype(np.float32)
  outputs = {
    "recon": recon,
    "vq_loss": jnp.float32(0.1),
    "codebook_loss": jnp.float32(0.08),
    "commitment_loss": jnp.float32(0.08),
    "perplexity": jnp.float32(3.0),
  }
  loss, metrics = vq_objective(
    outputs,
    {"x": x, "mask": np.array([1.0, 0.0], np.float32)},
    kl_weight=jnp.float32(1.0),
    config=None,
  )
  np.testing.assert_allclose(metrics["recon_mse"], 0.25)
  np.testing.assert_allclose(loss, 0.35, rtol=1e-6)
  assert set(metrics) == {
    "loss",
    "recon_mse",
    "vq_loss",
    "codebook_loss",
    "commitment_loss",
    "perplexity",
  }
  assert all(v.dtype == jnp.float32 and v.shape == () for v in metrics.values())


def test_adam_steps_lower_the_loss():
  model = PuzzleVQVAE(**TINY)
  batch = _batch(4, 16, 8, seed=5)
  variables = _tiny_variables()
  tx = optax.adam(1e-2)

  @jax.jit
  def step(params, batch_stats, opt_state):
    def loss_fn(params):
      out, state = model.apply(
        {"params": params, "batch_stats": batch_stats}, batch, train=True, mutable=["batch_stats"]
      )
      loss, _ = vq_objective(out, batch, kl_weight=0.0, config=None)
      return loss, state["batch_stats"]

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss

  params, batch_stats = variables["params"], variables["batch_stats"]
  opt_state = tx.init(params)
  losses = []
  for _ in range(40):
    params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state)
    losses.append(float(loss))
  assert np.all(np.isfinite(losses))
  assert np.mean(losses[-5:]) < 0.7 * losses[0], losses


def test_squared_distances_expansion():
  rng = np.random.default_rng(6)
  x, e = rng.normal(size=(5, 4)), rng.normal(size=(3, 4))
  np.testing.assert_allclose(
    vq_lib.squared_distances(x, e), ((x[:, None] - e[None]) ** 2).sum(-1), rtol=1e-5, atol=1e-5
  )
