"""Optax pieces: the optimizer chain, learning-rate schedules and the KL-weight schedule.

Schedules are functions of the step counter, evaluated inside the jitted step, so a resumed
run continues them exactly where it stopped.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def learning_rate(config, total_steps: int) -> optax.Schedule | float:
  t = config.train
  if t.lr_schedule == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=t.lr,
      warmup_steps=t.warmup_steps,
      decay_steps=max(total_steps, t.warmup_steps + 1),
      end_value=t.lr * t.min_lr_ratio,
    )
  if t.warmup_steps:
    return optax.linear_schedule(0.0, t.lr, t.warmup_steps)
  return t.lr


def scale_updates(multipliers) -> optax.GradientTransformation:
  """Multiplies each parameter's update by a fixed factor (per-parameter learning rates)."""

  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, m: u * m, updates, multipliers), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def optimizer(config, total_steps: int, multipliers=None) -> optax.GradientTransformation:
  """Global-norm clipping, then Adam/AdamW/SGD; reduce-on-plateau and accumulation on top."""
  t = config.train
  lr = learning_rate(config, total_steps)
  if t.optimizer == "adamw":
    opt = optax.adamw(lr, weight_decay=t.weight_decay)
  elif t.optimizer == "sgd":
    opt = optax.sgd(lr, momentum=0.9)
  else:
    opt = optax.adam(lr)
  parts = [optax.clip_by_global_norm(t.clip_norm)] if t.clip_norm > 0 else []
  parts.append(opt)
  if multipliers is not None:
    parts.append(scale_updates(multipliers))
  if t.lr_schedule == "plateau":
    # Scales updates down when the loss it is given stops improving (HarmonicVAE's
    # ReduceLROnPlateau); the trainer passes the step loss as `value`.
    parts.append(
      optax.contrib.reduce_on_plateau(
        factor=t.plateau_factor,
        patience=t.plateau_patience,
        accumulation_size=t.plateau_accumulation,
      )
    )
  tx = optax.chain(*parts)
  if t.grad_accum_steps > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=t.grad_accum_steps)
  return tx


def validation_kl_weight(config):
  """step -> the KL weight validation uses: the schedule's end (`kl.beta_end`) at every step,
  so the validation loss is the objective the schedule ramps to, comparable from the first
  epoch to the last (a loss at the ramp's lower weights would make the best checkpoint and
  early stopping prefer a model from before the ramp ended)."""
  end = float(config.kl.beta_end)
  return lambda step: jnp.float32(end)


def kl_weight(config, steps_per_epoch: int, total_steps: int):
  """Returns step -> KL weight (float32), per `config.kl`."""
  k = config.kl
  ramp = k.steps if k.steps > 0 else max(1, int(round(k.epochs * steps_per_epoch)))
  start, end = float(k.beta_start), float(k.beta_end)
  if k.schedule == "constant":
    return lambda step: jnp.float32(end)
  if k.schedule == "linear":
    return lambda step: jnp.float32(
      start + (end - start) * jnp.clip(step.astype(jnp.float32) / ramp, 0.0, 1.0)
    )

  period = max(1, total_steps // max(1, k.cycles))

  # Cyclical annealing (Fu et al. 2019): ramp over the first half of each period, then hold.
  def cyclical(step):
    phase = jnp.mod(step, period).astype(jnp.float32) / (0.5 * period)
    return jnp.float32(start + (end - start) * jnp.clip(phase, 0.0, 1.0))

  return cyclical
