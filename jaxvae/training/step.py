"""The pure step functions the trainer jits: train (with the non-finite guard), eval, forward."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from jaxvae.audio import augment
from jaxvae.losses import divergence
from jaxvae.training.state import TrainState
from jaxvae.training.state import step_rngs


def apply_model(model, params, model_state, batch, train, rngs):
  """(outputs, new model state); non-parameter collections are mutable only in training."""
  variables = {"params": params, **model_state}
  if train and model_state:
    return model.apply(variables, batch, train=True, rngs=rngs, mutable=list(model_state))
  return model.apply(variables, batch, train=train, rngs=rngs), model_state


def make_train_step(model, tx, objective, kl_fn, config) -> Callable:
  """Returns the pure `train_step(state, batch) -> (state, metrics)`."""

  def train_step(state: TrainState, batch):
    rngs = step_rngs(state.rng, state.step)
    kl_weight = kl_fn(state.step)
    # Spec masking is on the model's input only: the objective reconstructs the clean batch.
    inputs = augment.maybe_spec_mask(rngs.pop("augment"), batch, config)

    def loss_fn(params):
      outputs, new_model_state = apply_model(model, params, state.model_state, inputs, True, rngs)
      loss, metrics = objective(outputs, batch, kl_weight=kl_weight, config=config)
      return loss, (metrics, new_model_state)

    if state.dynamic_scale is not None:
      scale, finite, (loss, (metrics, model_state)), grads = state.dynamic_scale.value_and_grad(
        loss_fn, has_aux=True
      )(state.params)
    else:
      (loss, (metrics, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params
      )
      scale, finite = None, None
    updates, opt_state = tx.update(grads, state.opt_state, state.params, value=loss)
    params = optax.apply_updates(state.params, updates)
    if finite is not None:
      # A float16 overflow makes the gradient norm non-finite, so `skip_nonfinite` drops the
      # update like any other; the scaler has already backed off.
      metrics = dict(metrics, loss_scale=scale.scale, finite=finite.astype(jnp.float32))
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads))
    new_state = state.replace(
      step=state.step + 1,
      params=params,
      opt_state=opt_state,
      model_state=model_state,
      dynamic_scale=scale,
    )
    return new_state, metrics

  return train_step


def skip_nonfinite(train_step: Callable) -> Callable:
  """Wraps a train step so that an update from a non-finite loss or gradient is not applied.

  When a loss or gradient norm it reports (`loss*`, `grad_norm*`) is not finite, the step
  keeps the old parameters, optimizer and model state (the step counter, the RNG position and
  a float16 loss scale still advance) and reports `nonfinite` = 1. All of it is inside the
  jitted step, no host sync. The test reads scalars the step computes anyway, so the selects
  fuse into the update (a check of every new parameter would cost a pass over them and split
  the fusion); parameters that an update made non-finite give non-finite losses from the next
  step on, and `checkpoint.check_finite` keeps them out of every checkpoint. The loop stops a
  run after `train.max_nonfinite_steps` skipped steps in a row (see `NonfiniteWatch`).
  """

  def guarded(state: TrainState, batch):
    new_state, metrics = train_step(state, batch)
    # Every loss and gradient norm the step reports (the VAE-GAN has loss_d, grad_norm_g, ...).
    checked = [
      v for k, v in metrics.items() if k.startswith(("loss", "grad_norm")) and k != "loss_scale"
    ]
    ok = jnp.all(jnp.isfinite(jnp.stack([jnp.asarray(v, jnp.float32) for v in checked])))
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
    new_state = new_state.replace(
      params=keep(new_state.params, state.params),
      opt_state=keep(new_state.opt_state, state.opt_state),
      model_state=keep(new_state.model_state, state.model_state),
    )
    return new_state, dict(metrics, nonfinite=1.0 - ok.astype(jnp.float32))

  return guarded


def make_eval_step(model, objective, kl_fn, config) -> Callable:
  """`eval_step(state, batch) -> metrics`, deterministic (a fixed key), with `count`."""

  def eval_step(state: TrainState, batch):
    rngs = step_rngs(state.rng, jnp.int32(-1))
    outputs, _ = apply_model(model, state.params, state.model_state, batch, False, rngs)
    _, metrics = objective(outputs, batch, kl_weight=kl_fn(state.step), config=config)
    # Histograms such as VQ code usage are summed over the split, not averaged.
    counts = {k: v for k, v in outputs.items() if k.endswith("_counts")}
    out = dict(metrics, count=jnp.sum(batch["mask"]), counts=counts)
    if outputs.get("mu") is not None and outputs.get("logvar") is not None:
      out["latent"] = latent_sums(outputs["mu"], outputs["logvar"], batch["mask"])
    return out

  return eval_step


def latent_sums(mu, logvar, mask) -> dict[str, jax.Array]:
  """Per latent dimension, summed over the real examples: the KL to N(0, 1) and the first two
  moments of the posterior mean (the split's active units and per-dimension KL,
  `training.metrics`). A latent sequence [B, frames, D] (the waveform VAE's) counts each
  example by the mean over its frames, so the moments are over every frame of the split."""
  w = mask.astype(jnp.float32)[:, None]
  mu, logvar = mu.astype(jnp.float32), logvar.astype(jnp.float32)
  per_frame = lambda x: jnp.mean(x, axis=1) if x.ndim == 3 else x
  return {
    "kl": jnp.sum(w * per_frame(divergence.gaussian_kl(mu, logvar)), axis=0),
    "mu": jnp.sum(w * per_frame(mu), axis=0),
    "mu2": jnp.sum(w * per_frame(jnp.square(mu)), axis=0),
  }


def make_forward(model) -> Callable:
  """`forward(state, batch) -> outputs` in inference mode, for reports and evaluation."""

  def forward(state, batch):
    rngs = step_rngs(state.rng, jnp.int32(-1))
    outputs, _ = apply_model(model, state.params, state.model_state, batch, False, rngs)
    return outputs

  return forward
