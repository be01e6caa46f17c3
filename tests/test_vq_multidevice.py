"""The puzzle VQ-VAE gives the same train-mode results with the batch sharded over 4 devices.

BatchNorm statistics, code counts, perplexity and the EMA codebook are batch-global
reductions; under jit with a sharded batch XLA must make them global, not per device.
Run alone (`pytest tests/test_vq_multidevice.py`) or in a session whose other test modules do not
start the JAX backend at import; otherwise the test re-runs this file in a fresh process.
"""

import os

# Must be set before the JAX backend starts, i.e. before the first computation.
os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()

import functools  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import chex  # noqa: E402
import jax  # noqa: E402
from jax.sharding import Mesh  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402
import numpy as np  # noqa: E402

from jaxvae.models.vqvae import PuzzleVQVAE  # noqa: E402

_RERUN = "JAXVAE_VQ_MULTIDEVICE_SUBPROCESS"


def _train_apply(model, variables, batch):
  out, state = model.apply(
    variables,
    batch,
    train=True,
    mutable=["batch_stats", "vq_stats"],
    rngs={"vq": jax.random.key(1)},
  )
  return out, state


def _compare_sharded_with_single_device():
  # The seed architecture at a small input size, with EMA and restarts so every batch-global
  # statistic is exercised.
  model = PuzzleVQVAE(grid=(12, 12), use_ema=True, dead_code_threshold=2.0)
  rng = np.random.default_rng(0)
  batch = {
    "x": rng.uniform(size=(8, 32, 16)).astype(np.float32),
    "mask": np.array([1, 1, 1, 1, 1, 1, 1, 0], np.float32),
  }
  variables = jax.jit(functools.partial(model.init, train=False))(
    jax.random.key(0, impl="rbg"), batch
  )
  step = jax.jit(functools.partial(_train_apply, model))

  one = jax.device_put(batch, jax.devices()[0])
  out_1, state_1 = step(jax.device_put(variables, jax.devices()[0]), one)

  mesh = Mesh(np.array(jax.devices()), ("data",))
  sharded = jax.device_put(batch, NamedSharding(mesh, P("data")))
  replicated = jax.device_put(variables, NamedSharding(mesh, P()))
  out_n, state_n = step(replicated, sharded)
  assert len(out_n["recon"].sharding.device_set) == 4

  np.testing.assert_array_equal(out_n["code_counts"], out_1["code_counts"])
  assert float(np.sum(out_1["code_counts"])) == 7 * 12 * 12  # padded example not counted
  np.testing.assert_allclose(out_n["perplexity"], out_1["perplexity"], rtol=1e-5)
  np.testing.assert_array_equal(out_n["codes"], out_1["codes"])
  chex.assert_trees_all_close(state_n["batch_stats"], state_1["batch_stats"], rtol=1e-4, atol=1e-6)
  chex.assert_trees_all_close(state_n["vq_stats"], state_1["vq_stats"], rtol=1e-4, atol=1e-5)
  chex.assert_trees_all_close(out_n["recon"], out_1["recon"], rtol=1e-4, atol=1e-5)
  for key in ("vq_loss", "codebook_loss", "commitment_loss"):
    np.testing.assert_allclose(out_n[key], out_1[key], rtol=1e-4)
  # The BN statistics really moved (the comparison is not of two untouched copies).
  assert not np.allclose(state_1["batch_stats"]["encoder"]["BatchNorm_0"]["mean"], 0.0)


def test_sharded_forward_equals_single_device():
  if jax.device_count() >= 4:
    _compare_sharded_with_single_device()
    return
  # Another module started the backend with 1 device before XLA_FLAGS was set here.
  assert not os.environ.get(_RERUN), "forcing 4 host devices failed"
  result = subprocess.run(
    [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
    env={**os.environ, _RERUN: "1"},
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
