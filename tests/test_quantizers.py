"""jaxvae.models.quantizers (and the one-codebook quantizer's cosine lookup and rotation trick):
residual VQ with quantizer dropout, FSQ, LFQ, DAC's factorized codes, and codebooks that stay
the same on every device."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT
from jaxvae.models import quantizers
from jaxvae.models import vq


def _rvq(**kw):
  return quantizers.ResidualVQ(**{"num_quantizers": 4, "num_codes": 16, "dim": 8, **kw})


def _with_zero_codes(variables):
  """Every level's code 0 set to the zero vector: a level can then never add error."""
  params = jax.tree_util.tree_map_with_path(
    lambda path, x: x.at[0].set(0.0) if "codebook" in str(path[-1]) else x, variables["params"]
  )
  return {"params": params}


def test_each_residual_level_reduces_the_error_and_inference_picks_the_bitrate():
  z = jax.random.normal(jax.random.PRNGKey(0), (6, 10, 8))
  model = _rvq(init_scale=1.0)
  v = _with_zero_codes(model.init(jax.random.PRNGKey(1), z, train=False))
  errors, previous = [], None
  for k in range(1, 5):
    out = model.apply(v, z, train=False, n_quantizers=k)
    errors.append(float(jnp.mean(jnp.square(out["quantized"] - z))))
    codes = np.asarray(out["codes"])
    assert codes.shape == (6, 10, 4)
    assert (codes[..., k:] == -1).all() and (codes[..., :k] >= 0).all()
    if previous is not None:  # the first k levels are the same codes at every bitrate
      np.testing.assert_array_equal(codes[..., : k - 1], previous[..., : k - 1])
    previous = codes
  assert all(b <= a + 1e-6 for a, b in zip(errors, errors[1:])) and errors[-1] < errors[0]
  # The output is the sum of the chosen codes of each level.
  out = model.apply(v, z, train=False)
  books = [v["params"][f"level_{i}"]["codebook"] for i in range(4)]
  total = sum(books[i][out["codes"][..., i]] for i in range(4))
  np.testing.assert_allclose(out["quantized"], total, atol=1e-5)
  assert out["level_counts"].shape == (4, 16) and out["level_perplexity"].shape == (4,)
  # Codes back to vectors (what a decoder of codes reads), unused levels (-1) included.
  for k in (2, 4):
    part = model.apply(v, z, train=False, n_quantizers=k)
    back = model.apply(v, part["codes"], method="lookup")
    np.testing.assert_allclose(back, part["quantized"], atol=1e-5)
  with pytest.raises(ValueError, match="n_quantizers must be in 1..4"):
    model.apply(v, z, train=False, n_quantizers=5)


def test_quantizer_dropout_draws_levels_per_example_in_training_only():
  z = jax.random.normal(jax.random.PRNGKey(0), (64, 3, 8))
  model = _rvq(dropout=1.0)
  v = model.init(jax.random.PRNGKey(1), z, train=False)
  out = model.apply(v, z, train=True, rngs={"vq": jax.random.PRNGKey(2)})
  used = (np.asarray(out["codes"])[:, 0, :] >= 0).sum(-1)
  assert set(used) == {1, 2, 3, 4}  # every bitrate drawn
  # Within an example the used levels are the first ones.
  codes = np.asarray(out["codes"])
  assert all((codes[b, :, used[b] :] == -1).all() for b in range(64))
  assert float(out["levels_used"]) == pytest.approx(used.mean())
  # Gradients reach the input through every level that was used.
  grad = jax.grad(
    lambda x: jnp.sum(
      model.apply(v, x, train=True, rngs={"vq": jax.random.PRNGKey(2)})["quantized"]
    )
  )(z)
  assert np.isfinite(np.asarray(grad)).all() and float(jnp.abs(grad).sum()) > 0
  assert (np.asarray(model.apply(v, z, train=False)["codes"]) >= 0).all()  # eval: all levels


def test_factorized_cosine_codes_project_to_a_small_codebook():
  z = jax.random.normal(jax.random.PRNGKey(0), (4, 5, 32))
  model = _rvq(dim=32, lookup_dim=4, num_quantizers=2)
  v = model.init(jax.random.PRNGKey(1), z, train=False)
  assert v["params"]["level_0"]["vq"]["codebook"].shape == (16, 4)
  assert v["params"]["level_0"]["in_proj"]["kernel"].shape == (32, 4)
  out = model.apply(v, z, train=False)
  assert out["quantized"].shape == z.shape and np.isfinite(float(out["vq_loss"]))


def test_the_cosine_lookup_ignores_scale():
  codebook = jnp.asarray([[10.0, 0.0], [0.1, 0.1]])
  x = jnp.asarray([[0.2, 0.25]])  # nearest in distance: code 1; in angle: code 1 too
  y = jnp.asarray([[1.0, 0.1]])  # nearest in distance: code 1; in angle: code 0
  assert int(vq.nearest_codes(y, codebook)[0]) == 1
  quant = vq.VectorQuantizer(num_codes=2, code_dim=2, cosine=True)
  v = {"params": {"codebook": codebook}}
  assert int(quant.apply(v, y, train=False)["codes"][0]) == 0
  assert int(quant.apply(v, 100.0 * y, train=False)["codes"][0]) == 0
  assert int(quant.apply(v, x, train=False)["codes"][0]) == 1


def test_the_rotation_trick_gives_the_code_and_a_rotated_gradient():
  e = jax.random.normal(jax.random.PRNGKey(0), (5, 6))
  q = jax.random.normal(jax.random.PRNGKey(1), (5, 6))
  np.testing.assert_allclose(vq.rotate_to(e, q), q, atol=1e-5)
  np.testing.assert_allclose(vq.rotate_to(e, -e * 2.0), -e * 2.0, atol=1e-5)  # antiparallel
  g = jax.random.normal(jax.random.PRNGKey(2), (5, 6))
  grad = jax.grad(lambda x: jnp.sum(g * vq.rotate_to(x, q)))(e)
  # The map is lambda * R with R orthogonal: the gradient is lambda * R^T g, as long as g.
  lam = np.linalg.norm(q, axis=-1) / np.linalg.norm(e, axis=-1)
  np.testing.assert_allclose(
    np.linalg.norm(grad, axis=-1), lam * np.linalg.norm(g, axis=-1), rtol=1e-4
  )
  assert not np.allclose(grad, g)  # not straight through
  # Along e itself the rotation takes e to q: R^T maps q's direction back onto e's.
  q_dir = q / np.linalg.norm(q, axis=-1, keepdims=True)
  e_dir = np.asarray(e) / np.linalg.norm(e, axis=-1, keepdims=True)
  back = jax.grad(lambda x: jnp.sum(q_dir * vq.rotate_to(x, q)))(e)
  np.testing.assert_allclose(back / lam[:, None], e_dir, atol=1e-4)


def test_fsq_rounds_each_dimension_to_its_levels_and_codes_round_trip():
  fsq = quantizers.FSQ(levels=(8, 5, 5, 3))
  assert fsq.num_codes == 600
  z = 3.0 * jax.random.normal(jax.random.PRNGKey(0), (4000, 4))
  out = fsq.apply({}, z)
  values = np.asarray(out["quantized"])
  assert [len(np.unique(values[:, i])) for i in range(4)] == [8, 5, 5, 3]
  assert np.abs(values).max() <= 1.0
  np.testing.assert_array_equal(fsq.codes_of(values), out["codes"])
  every = jnp.arange(600)
  np.testing.assert_array_equal(fsq.codes_of(fsq.values_of(every)), every)
  np.testing.assert_allclose(fsq.apply({}, out["codes"], method="lookup"), values)
  assert float(out["vq_loss"]) == 0.0 and float(out["perplexity"]) > 100
  grad = jax.grad(lambda x: jnp.sum(fsq.apply({}, x)["quantized"]))(z[:10])
  assert (np.asarray(grad) > 0).all()  # straight through the rounding, along the tanh
  with pytest.raises(ValueError, match=r"FSQ: expected input \[..., 4\]"):
    fsq.apply({}, z[:, :3])


def test_lfq_codes_are_sign_bits_and_its_entropy_terms_reward_using_the_codebook():
  lfq = quantizers.LFQ(dim=6)
  z = jax.random.normal(jax.random.PRNGKey(0), (512, 6))
  out = lfq.apply({}, z)
  np.testing.assert_array_equal(lfq.values_of(out["codes"]), np.sign(np.asarray(z)))
  np.testing.assert_array_equal(np.asarray(out["quantized"]), np.sign(np.asarray(z)))
  one_code = lfq.apply({}, jnp.abs(z) + 0.5)  # every vector in the all-ones code
  assert float(one_code["entropy_codebook"]) < 0.5 * float(out["entropy_codebook"])
  assert float(one_code["perplexity"]) == pytest.approx(1.0)
  assert float(out["perplexity"]) > 40  # of 64 codes
  grad = jax.grad(lambda x: lfq.apply({}, x)["vq_loss"])(z)
  assert np.isfinite(np.asarray(grad)).all()


def test_ema_codebooks_with_restarts_are_the_same_on_four_devices_as_on_one(tmp_path):
  """A jitted EMA update of a residual VQ (dead codes restarted) on a batch sharded over 4
  fake CPU devices leaves the codebooks and the loss one device gives."""
  script = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from jaxvae.models import quantizers
    assert jax.device_count() == 4
    model = quantizers.ResidualVQ(num_quantizers=3, num_codes=32, dim=8, use_ema=True,
                                  dead_code_threshold=2.0, dropout=0.5)
    z = jax.random.normal(jax.random.PRNGKey(0), (16, 12, 8))
    v = model.init(jax.random.PRNGKey(1), z, train=False)

    def step(v, z, key):
      out, new = model.apply(v, z, train=True, rngs={"vq": key}, mutable=["vq_stats"])
      return {**v, **new}, out["vq_loss"]

    def run(shard):
      state = v
      mesh = Mesh(np.array(jax.devices()), ("data",))
      put = (lambda x: jax.device_put(x, NamedSharding(mesh, P("data")))) if shard else (
        lambda x: jax.device_put(x, jax.devices()[0]))
      f = jax.jit(step)
      losses = []
      for i in range(4):
        batch = put(z * (1.0 + 0.1 * i))
        state, loss = f(state, batch, jax.random.PRNGKey(10 + i))
        losses.append(float(loss))
      return jax.device_get(state["vq_stats"]), losses

    one, l1 = run(False)
    four, l4 = run(True)
    sizes = [np.asarray(one[f"level_{i}"]["cluster_size"]) for i in range(3)]
    restarted = [int((s == 2.0).sum()) for s in sizes]
    assert sum(restarted) > 0, restarted  # the steps did restart codes
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(four)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(l1, l4, rtol=1e-5)
    print("same", restarted)
    """
  )
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
  done = subprocess.run(
    [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
  )
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.startswith("same")


def test_residual_kmeans_fills_each_level_from_what_the_last_left():
  rng = np.random.default_rng(0)
  centres = rng.standard_normal((4, 3)) * 4.0
  z = (centres[rng.integers(0, 4, 600)] + 0.3 * rng.standard_normal((600, 3))).astype(np.float32)
  books = vq.kmeans_init_residual(z, 4, 2, seed=0)
  assert [b.shape for b in books] == [(4, 3), (4, 3)]
  # The first level finds the clusters; the second codes what is left, near zero.
  assert np.abs(books[1]).mean() < 0.5 < np.abs(books[0]).mean()
  model = _rvq(num_quantizers=2, num_codes=4, dim=3)
  v = model.init(jax.random.PRNGKey(0), jnp.asarray(z[:8]), train=False)
  for i, book in enumerate(books):
    v = vq.with_codebook(v, book, where=f"level_{i}")
  np.testing.assert_allclose(v["params"]["level_1"]["codebook"], books[1])
  error = float(jnp.mean(jnp.square(model.apply(v, jnp.asarray(z), train=False)["quantized"] - z)))
  assert error < 0.1
