"""The one trainer: state, jitted sharded steps, the epoch loop, checkpoints and logs.

It knows nothing about variants: the registry gives it a model and an objective, the config
gives it schedules. Sections follow the run: setup, state, steps, loop.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from flax import struct
from flax.training import dynamic_scale as dynamic_scale_lib
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxvae import checkpoint as ckpt_lib
from jaxvae import monitor
from jaxvae import optim
from jaxvae import registry
from jaxvae.config_lib import ConfigError
from jaxvae.data import pipeline
from jaxvae.data import store as store_lib

RNG_STREAMS = ("sample", "dropout", "vq")


# ---------------------------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------------------------

class TrainState(struct.PyTreeNode):
  """Everything a step reads and writes; all of it is checkpointed."""
  step: jax.Array
  params: Any
  model_state: Any  # non-parameter collections: batch_stats, VQ statistics, ...
  opt_state: Any
  rng: jax.Array  # the run's base key; a step's keys are fold_in(rng, step).
  dynamic_scale: Any = None  # float16 loss scaling, else None.


def step_rngs(rng: jax.Array, step: jax.Array) -> dict[str, jax.Array]:
  key = jax.random.fold_in(rng, step)
  return {name: jax.random.fold_in(key, i) for i, name in enumerate(RNG_STREAMS)}


def init_variables(model: nn.Module, batch: dict, rng: jax.Array) -> dict:
  params_rng, other = jax.random.split(rng)
  rngs = {"params": params_rng, **step_rngs(other, jnp.int32(0))}
  return model.init(rngs, batch, train=False)


def create_state(model, tx, batch, config) -> TrainState:
  rng = jax.random.PRNGKey(config.seed)
  variables = jax.jit(lambda b: init_variables(model, b, jax.random.fold_in(rng, 1)))(batch)
  variables = flax.core.unfreeze(variables)
  params = variables.pop("params")
  scale = (dynamic_scale_lib.DynamicScale(scale=config.train.loss_scale_init)
           if config.dtype == "float16" else None)
  return TrainState(step=jnp.int32(0), params=params, model_state=variables,
                    opt_state=tx.init(params), rng=rng, dynamic_scale=scale)


# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------

def _apply(model, state_or_params, model_state, batch, train, rngs):
  variables = {"params": state_or_params, **model_state}
  if train and model_state:
    return model.apply(variables, batch, train=True, rngs=rngs, mutable=list(model_state))
  return model.apply(variables, batch, train=train, rngs=rngs), model_state


def make_train_step(model, tx, objective, kl_fn, config) -> Callable:
  """Returns the pure `train_step(state, batch) -> (state, metrics)`."""

  def train_step(state: TrainState, batch):
    rngs = step_rngs(state.rng, state.step)
    kl_weight = kl_fn(state.step)

    def loss_fn(params):
      outputs, new_model_state = _apply(model, params, state.model_state, batch, True, rngs)
      loss, metrics = objective(outputs, batch, kl_weight=kl_weight, config=config)
      return loss, (metrics, new_model_state)

    if state.dynamic_scale is not None:
      scale, finite, (loss, (metrics, model_state)), grads = state.dynamic_scale.value_and_grad(
          loss_fn, has_aux=True)(state.params)
    else:
      (loss, (metrics, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          state.params)
      scale, finite = None, None
    updates, opt_state = tx.update(grads, state.opt_state, state.params, value=loss)
    params = optax.apply_updates(state.params, updates)
    if finite is not None:
      # A float16 overflow skips the update; the scaler has already backed off.
      keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
      params = keep(params, state.params)
      opt_state = keep(opt_state, state.opt_state)
      model_state = keep(model_state, state.model_state)
      metrics = dict(metrics, loss_scale=scale.scale, finite=finite.astype(jnp.float32))
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads))
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              model_state=model_state, dynamic_scale=scale)
    return new_state, metrics

  return train_step


def make_eval_step(model, objective, kl_fn, config) -> Callable:
  """`eval_step(state, batch) -> metrics`, deterministic (a fixed key), with `count`."""

  def eval_step(state: TrainState, batch):
    rngs = step_rngs(state.rng, jnp.int32(-1))
    outputs, _ = _apply(model, state.params, state.model_state, batch, False, rngs)
    _, metrics = objective(outputs, batch, kl_weight=kl_fn(state.step), config=config)
    return dict(metrics, count=jnp.sum(batch["mask"]))

  return eval_step


def make_forward(model) -> Callable:
  """`forward(state, batch) -> outputs` in inference mode, for reports and evaluation."""

  def forward(state, batch):
    rngs = step_rngs(state.rng, jnp.int32(-1))
    outputs, _ = _apply(model, state.params, state.model_state, batch, False, rngs)
    return outputs

  return forward


# ---------------------------------------------------------------------------------------------
# Setup: data, model, mesh
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Run:
  """What a mode needs: data, model, compiled functions, and the state template."""
  config: Any
  store: store_lib.Store
  train_examples: pipeline.Examples
  val_examples: pipeline.Examples
  spec: Any
  model: nn.Module
  variant: registry.Variant
  tx: optax.GradientTransformation
  mesh: Mesh
  batch_sharding: NamedSharding
  state: TrainState
  steps_per_epoch: int
  total_steps: int
  kl_fn: Callable
  train_step: Callable
  eval_step: Callable
  forward: Callable

  def put(self, batch: dict) -> dict:
    """Host batch -> a global array sharded over the `data` axis (multi-host safe)."""
    return {k: jax.make_array_from_process_local_data(self.batch_sharding, np.asarray(v))
            for k, v in batch.items()}


def make_mesh(num_devices: int = 0) -> Mesh:
  devices = jax.devices()
  if num_devices > len(devices):
    raise ConfigError(f"config key 'train.num_devices' is {num_devices}, but only "
                      f"{len(devices)} devices are visible")
  return Mesh(np.array(devices[:num_devices] if num_devices else devices), ("data",))


def check_batch(batch_size: int, mesh: Mesh) -> None:
  n = mesh.devices.size
  if batch_size % n:
    raise ConfigError(f"config key 'train.batch_size' is {batch_size}, which does not divide "
                      f"over {n} devices; use a multiple of {n}")


@dataclasses.dataclass
class Compiled:
  """A model with its optimizer, state and jitted steps, for a given data spec."""
  model: nn.Module
  variant: registry.Variant
  tx: optax.GradientTransformation
  mesh: Mesh
  batch_sharding: NamedSharding
  state: TrainState
  kl_fn: Callable
  train_step: Callable
  eval_step: Callable
  forward: Callable


def build(config, spec, example_batch: dict, steps_per_epoch: int, total_steps: int) -> Compiled:
  """Model, optimizer, replicated state and the sharded, jitted steps (no data needed)."""
  variant = registry.get(config.model.name)
  try:
    model = variant.build_model(config.model, spec, dtype=config.dtype)
  except KeyError as e:
    raise ConfigError(f"config key 'model': {e.args[0]}") from None
  mesh = make_mesh(config.train.num_devices)
  check_batch(config.train.batch_size, mesh)
  tx = optim.optimizer(config, total_steps)
  kl_fn = optim.kl_weight(config, steps_per_epoch, total_steps)
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P("data"))
  state = jax.device_put(create_state(model, tx, example_batch, config), replicated)
  state_sharding = jax.tree.map(lambda _: replicated, state)
  objective = variant.objective
  train_step = jax.jit(make_train_step(model, tx, objective, kl_fn, config),
                       in_shardings=(state_sharding, batch_sharding),
                       out_shardings=(state_sharding, replicated), donate_argnums=(0,))
  eval_step = jax.jit(make_eval_step(model, objective, kl_fn, config),
                      in_shardings=(state_sharding, batch_sharding), out_shardings=replicated)
  forward = jax.jit(make_forward(model), in_shardings=(state_sharding, batch_sharding))
  return Compiled(model, variant, tx, mesh, batch_sharding, state, kl_fn, train_step,
                  eval_step, forward)


def setup(config, *, progress: bool = True) -> Run:
  store = store_lib.build(config, progress=progress)
  lyrics = pipeline.load_lyrics(config, store)
  train_ex = pipeline.split_examples(config, store, "train", lyrics)
  val_ex = pipeline.split_examples(config, store, "validation", lyrics)
  if len(val_ex) == 0:  # tiny datasets: validate on the training split rather than on nothing
    logging.warning("The validation split is empty; validating on the training split.")
    val_ex = train_ex
  spec = pipeline.data_spec(store, lyrics)
  spe = pipeline.steps_per_epoch(train_ex, config.train.batch_size)
  total = spe * config.train.epochs
  if config.train.max_steps:
    total = min(total, config.train.max_steps)
  example = next(pipeline.eval_batches(train_ex, config.train.batch_size))
  c = build(config, spec, example, spe, total)
  return Run(config, store, train_ex, val_ex, spec, c.model, c.variant, c.tx, c.mesh,
             c.batch_sharding, c.state, spe, total, c.kl_fn, c.train_step, c.eval_step,
             c.forward)


# ---------------------------------------------------------------------------------------------
# Evaluation helpers
# ---------------------------------------------------------------------------------------------

def evaluate(run: Run, state: TrainState, examples: pipeline.Examples) -> dict[str, float]:
  """Example-weighted means of the objective's metrics over a whole split."""
  collected = [run.eval_step(state, run.put(b))
               for b in pipeline.eval_batches(examples, run.config.train.batch_size)]
  collected = jax.device_get(collected)
  counts = np.array([m["count"] for m in collected])
  out = {}
  for key in collected[0]:
    if key != "count":
      out[key] = float(np.sum([m[key] * c for m, c in zip(collected, counts)]) / counts.sum())
  return out


def _mean_metrics(rows: list[dict]) -> dict[str, float]:
  rows = jax.device_get(rows)
  return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------

def _fresh_meta() -> dict:
  return {"best_val": math.inf, "best_step": -1, "bad_epochs": 0, "history": [],
          "stopped_early": False, "wall_s": 0.0}


def _init_state(run: Run, config) -> TrainState:
  """Weights from `init_from` (fine-tuning / progressive stages) and data-driven init."""
  state = run.state
  if config.init_from:
    params, model_state = ckpt_lib.restore_weights(config.init_from, state)
    state = state.replace(params=params, model_state=model_state,
                          opt_state=run.tx.init(params))
    logging.info("Initialized weights from %s", config.init_from)
  elif run.variant.data_init is not None:
    batches = [run.put(b) for b, _ in zip(pipeline.eval_batches(
        run.train_examples, config.train.batch_size), range(8))]
    state = run.variant.data_init(state, run.model, batches, config)
  replicated = NamedSharding(run.mesh, P())
  return jax.device_put(state, replicated)


def train_and_evaluate(config, workdir: str, *, progress: bool = True) -> dict:
  """Trains (or resumes) in `workdir`; returns the final run metadata."""
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  monitor.mark_workdir(workdir, config)
  run = setup(config, progress=progress)
  ckpts = ckpt_lib.Checkpoints(workdir, config.train.keep_checkpoints)
  iterator = pipeline.train_iterator(run.train_examples, config.train.batch_size,
                                     config.seed, config)
  if ckpts.latest_step() is not None:
    state, meta = ckpts.restore_latest(run.state, iterator)
    logging.info("Resumed from step %d in %s", int(state.step), workdir)
  else:
    state, meta = _init_state(run, config), _fresh_meta()
  writer = monitor.Writer(workdir, config)
  try:
    state, meta = _loop(run, state, meta, iterator, ckpts, writer, progress)
  finally:
    writer.close()
    ckpts.close()
  monitor.finish(workdir, config, meta)
  return meta


def _loop(run, state, meta, iterator, ckpts, writer, progress):
  config, spe = run.config, run.steps_per_epoch
  t = config.train
  step = int(state.step)
  start_epoch = step // spe
  for epoch in range(start_epoch, t.epochs):
    if meta["stopped_early"] or step >= run.total_steps:
      break
    epoch_start = time.time()
    steps = min(spe - step % spe, run.total_steps - step)
    rows = []
    bar = tqdm.tqdm(total=steps, desc=f"epoch {epoch + 1}/{t.epochs}", disable=not progress,
                    leave=False)
    window_start, window_step = time.time(), step
    for _ in range(steps):
      state, metrics = run.train_step(state, run.put(next(iterator)))
      rows.append(metrics)
      step += 1
      bar.update(1)
      if step % t.log_every_steps == 0:
        logged = _mean_metrics(rows[-t.log_every_steps:])  # host sync only here
        rate = (step - window_step) * t.batch_size / max(time.time() - window_start, 1e-9)
        window_start, window_step = time.time(), step
        writer.scalars(step, {f"train/{k}": v for k, v in logged.items()}
                       | {"train/samples_per_s": rate})
        bar.set_postfix(loss=f"{logged['loss']:.4g}", samples_s=f"{rate:.0f}")
      if t.checkpoint_every_steps and step % t.checkpoint_every_steps == 0 and step % spe:
        ckpts.save(step, state, iterator, meta)
    bar.close()
    if step % spe and step < run.total_steps:
      continue  # defensive: an epoch only ends on its boundary or at the step limit
    meta = _end_epoch(run, state, meta, rows, epoch, ckpts, writer, time.time() - epoch_start)
    ckpts.save(step, state, iterator, meta)
  return state, meta


def _end_epoch(run, state, meta, rows, epoch, ckpts, writer, seconds):
  config = run.config
  step = int(state.step)
  train_metrics = _mean_metrics(rows)
  val_metrics = evaluate(run, state, run.val_examples)
  record = {"epoch": epoch + 1, "step": step, "seconds": round(seconds, 3)}
  record |= {f"train/{k}": v for k, v in train_metrics.items()}
  record |= {f"val/{k}": v for k, v in val_metrics.items()}
  meta = dict(meta, history=meta["history"] + [record], wall_s=meta["wall_s"] + seconds)
  writer.epoch(record)
  val_loss = val_metrics["loss"]
  if val_loss < meta["best_val"] - 1e-12:
    meta.update(best_val=val_loss, best_step=step, bad_epochs=0)
    ckpts.save_best(step, state, meta)
  else:
    meta["bad_epochs"] += 1
    if config.train.patience and meta["bad_epochs"] >= config.train.patience:
      meta["stopped_early"] = True
      logging.info("Early stopping at epoch %d: no improvement for %d epochs", epoch + 1,
                   meta["bad_epochs"])
  logging.info("epoch %d: train loss %.5g, val loss %.5g (best %.5g)", epoch + 1,
               train_metrics.get("loss", float("nan")), val_loss, meta["best_val"])
  if config.train.image_every_epochs and ((epoch + 1) % config.train.image_every_epochs == 0
                                          or epoch == 0):
    monitor.reconstructions(run, state, writer, step, epoch + 1)
  return meta
