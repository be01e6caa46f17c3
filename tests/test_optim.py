"""Optimizer chain, gradient accumulation, per-parameter learning rates and KL schedules."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import load_config
from jaxvae.training import optim


def _config(**overrides):
  return load_config("conv_vae.py:small", {k: str(v) for k, v in overrides.items()})


def _linear_grads(w, x, y):
  return jax.grad(lambda w: jnp.mean(jnp.square(x @ w - y)))(w)


def test_grad_accumulation_equals_one_large_batch():
  """k micro-batches through MultiSteps give the update of one k-times larger batch."""
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(16, 3)).astype(np.float32), rng.normal(size=(16,)).astype(np.float32)
  w0 = jnp.zeros(3)
  big = optim.optimizer(_config(**{"train.clip_norm": 0.0}), 100)
  upd, _ = big.update(_linear_grads(w0, x, y), big.init(w0), w0)
  w_big = optax.apply_updates(w0, upd)

  acc = optim.optimizer(_config(**{"train.clip_norm": 0.0, "train.grad_accum_steps": 4}), 100)
  state, w = acc.init(w0), w0
  for k in range(4):
    upd, state = acc.update(_linear_grads(w0, x[4 * k : 4 * k + 4], y[4 * k : 4 * k + 4]), state, w)
    w = optax.apply_updates(w, upd)
    if k < 3:
      np.testing.assert_array_equal(w, w0)  # nothing moves until the k-th micro-batch
  np.testing.assert_allclose(w, w_big, rtol=1e-5, atol=1e-7)


def test_lr_multipliers_scale_only_their_parameters():
  params = {"net": jnp.ones(2), "gmm": jnp.ones(2)}
  grads = {"net": jnp.ones(2), "gmm": jnp.ones(2)}
  tx = optim.optimizer(
    _config(**{"train.clip_norm": 0.0, "train.optimizer": "sgd"}), 10, {"net": 1.0, "gmm": 0.1}
  )
  upd, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(upd["gmm"], 0.1 * upd["net"], rtol=1e-6)


def test_clipping_bounds_the_global_norm():
  tx = optim.optimizer(
    _config(**{"train.clip_norm": 0.5, "train.optimizer": "sgd", "train.lr": 1.0}), 10
  )
  g = {"a": jnp.full(4, 10.0)}
  upd, _ = tx.update(g, tx.init(g), g)
  assert float(optax.tree.norm(upd)) == pytest.approx(0.5, rel=1e-5)


def test_kl_schedules():
  step = lambda n: jnp.int32(n)
  lin = optim.kl_weight(
    _config(
      **{
        "kl.schedule": "linear",
        "kl.beta_start": 0.0,
        "kl.beta_end": 2.0,
        "kl.epochs": 2.0,
        "kl.steps": 0,
      }
    ),
    10,
    100,
  )
  assert [float(lin(step(n))) for n in (0, 10, 20, 50)] == pytest.approx([0.0, 1.0, 2.0, 2.0])
  # kl.steps, when set (the :small presets: 400), is the ramp whatever an epoch is.
  small = _config(**{"kl.beta_end": 2.0})
  by_steps = optim.kl_weight(small, 7, 2000)
  assert [float(by_steps(step(n))) for n in (0, 200, 400)] == pytest.approx([0.0, 1.0, 2.0])
  # Validation uses the end weight from the first step on.
  assert float(optim.validation_kl_weight(small)(step(0))) == 2.0
  const = optim.kl_weight(_config(**{"kl.schedule": "constant", "kl.beta_end": 4.0}), 10, 100)
  assert float(const(step(37))) == 4.0
  cyc = optim.kl_weight(
    _config(**{"kl.schedule": "cyclical", "kl.beta_end": 1.0, "kl.cycles": 4}), 10, 100
  )
  # 4 cycles of 25 steps: ramp over 12.5 steps, then hold, then start again.
  assert [float(cyc(step(n))) for n in (0, 6, 20, 25, 31)] == pytest.approx(
    [0.0, 0.48, 1.0, 0.0, 0.48]
  )


def test_warmup_cosine_schedule():
  lr = optim.learning_rate(
    _config(**{"train.lr_schedule": "warmup_cosine", "train.lr": 1.0, "train.warmup_steps": 10}),
    110,
  )
  assert float(lr(0)) == 0.0 and float(lr(10)) == pytest.approx(1.0)
  assert float(lr(110)) == pytest.approx(0.0, abs=1e-6)
