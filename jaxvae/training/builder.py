"""From a config to what the loop and the modes run: the model, its optimizer and state, the
sharded jitted steps (`build` -> `Compiled`), and with the data (`setup` -> `Job`).

The variant registry gives the model, objective, stages and optional hooks; the trainer never
learns a variant's name.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
from typing import Any

import flax.linen as nn
import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
import numpy as np
import optax

from jaxvae import multihost
from jaxvae.data import dataset as dataset_lib
from jaxvae.data import pipeline
from jaxvae.data import store as store_lib
from jaxvae.errors import ConfigError
from jaxvae.errors import NonFiniteOutputError
from jaxvae.training import frozen
from jaxvae.training import mesh as mesh_lib
from jaxvae.training import optim
from jaxvae.training import step as step_lib
from jaxvae.training.state import TrainState
from jaxvae.training.state import create_state
from jaxvae.variants import registry


@dataclasses.dataclass
class Compiled:
  """A model with its optimizer, state and jitted steps, for a given data spec."""

  config: Any
  model: nn.Module
  variant: registry.Variant
  tx: optax.GradientTransformation
  mesh: Mesh
  batch_sharding: NamedSharding
  state: TrainState  # the initial state (replicated)
  kl_fn: Callable
  stages: list[registry.Stage]
  train_steps: list[Callable]  # one per stage
  eval_steps: list[Callable]
  forward: Callable

  @property
  def train_step(self) -> Callable:
    return self.train_steps[-1]

  @property
  def eval_step(self) -> Callable:
    return self.eval_steps[-1]

  def put(self, batch: dict) -> dict:
    """A host batch (this process's share or the whole global batch) as sharded arrays."""
    return mesh_lib.put_batch(batch, self.batch_sharding, self.config.train.batch_size)

  def gather(self, tree):
    """Device arrays (batch-sharded or replicated) -> numpy on every process."""
    return multihost.to_host(tree)


@dataclasses.dataclass
class Job(Compiled):
  """A `Compiled` with its data: what the loop and every mode need."""

  store: store_lib.Store = None
  train_examples: pipeline.Examples = None
  val_examples: pipeline.Examples = None
  spec: Any = None
  steps_per_epoch: int = 0  # the trainer's epoch: train.eval_every_steps, else one data pass
  total_steps: int = 0
  data_steps_per_epoch: int = 0  # the steps of one pass over the training split

  def data_epochs(self, step: int) -> float:
    """Passes over the training split that `step` steps make."""
    return step / max(1, self.data_steps_per_epoch)


def require_finite(values, what: str, step: int | None = None) -> None:
  """Raises NonFiniteOutputError when a float array of `values` (an array or a tree of host
  arrays) holds NaN or inf: nothing is decoded, drawn, played or exported from a diverged
  model."""
  bad = total = 0
  for leaf in jax.tree.leaves(values):
    leaf = np.asarray(leaf)
    if np.issubdtype(leaf.dtype, np.inexact):
      bad += int(np.size(leaf) - np.count_nonzero(np.isfinite(leaf)))
      total += int(np.size(leaf))
  if bad:
    at = f" of the checkpoint at step {step}" if step is not None else ""
    raise NonFiniteOutputError(
      f"the model{at} gives non-finite {what} ({bad} of {total} values are NaN or inf): it "
      "diverged. Retrain (--clear) with a lower train.lr, a train.clip_norm, or dtype float32"
    )


def check_outputs(job: Job, state, what: str = "outputs") -> None:
  """The model's outputs on the first validation batch (its real examples), checked finite
  (`require_finite`); what eval, generate and the reports run before using a checkpoint."""
  examples = job.val_examples if len(job.val_examples.indices) else job.train_examples
  batch = next(pipeline.eval_batches(examples, job.config.train.batch_size))
  outputs = job.gather(job.forward(state, job.put(batch)))
  real = np.asarray(batch["mask"]) > 0
  outputs = {
    k: np.asarray(v)[real] if np.ndim(v) and np.shape(v)[0] == real.size else v
    for k, v in outputs.items()
  }
  require_finite(outputs, f"{what} ({', '.join(sorted(outputs))})", int(state.step))


def total_epochs(config) -> int:
  return sum(s.epochs for s in registry.get(config.model.name).stage_list(config))


def _model(variant, config, spec):
  """The variant's module, and the frozen run it reads (`Variant.reads_run`) or None."""
  reads = variant.reads_run(config) if variant.reads_run else None
  run = frozen.load(reads[1], reads[0]) if reads else None
  kwargs = {"reads": run.function} if run else {}
  try:
    return variant.build_model(config.model, spec, dtype=config.dtype, **kwargs), run
  except KeyError as e:
    raise ConfigError(f"config key 'model': {e.args[0]}") from None


def build(config, spec, example_batch: dict, steps_per_epoch: int, total_steps: int) -> Compiled:
  """Model, optimizer, replicated state and the sharded, jitted steps (no data needed)."""
  variant = registry.get(config.model.name)
  model, run = _model(variant, config, spec)
  mesh = mesh_lib.make_mesh(config.train.num_devices)
  mesh_lib.check_batch(config.train.batch_size, mesh)
  kl_fn = optim.kl_weight(config, steps_per_epoch, total_steps)
  replicated = mesh_lib.replicated(mesh)
  batch_sharding = mesh_lib.batch_sharded(mesh)

  def make_tx(params):
    mult = variant.lr_multipliers(params, config) if variant.lr_multipliers else None
    tx = optim.optimizer(config, total_steps, mult)
    if variant.make_optimizer is not None:
      tx = variant.make_optimizer(config, total_steps, params, tx)
    return tx

  state, tx = create_state(model, make_tx, example_batch, config)
  if run is not None:  # the frozen run's weights instead of its init's zeros
    state = frozen.install(state, run)
  state = jax.device_put(state, replicated)
  state_sharding = jax.tree.map(lambda _: replicated, state)
  stages = variant.stage_list(config)
  train_steps, eval_steps = [], []
  for stage in stages:
    step_fn = step_lib.make_train_step(model, tx, stage.objective, kl_fn, config)
    make_step = stage.make_train_step or variant.make_train_step
    if make_step is not None:
      step_fn = make_step(model, tx, stage.objective, kl_fn, config, step_fn)
    train_steps.append(
      jax.jit(
        step_lib.skip_nonfinite(step_fn),
        in_shardings=(state_sharding, batch_sharding),
        out_shardings=(state_sharding, replicated),
        donate_argnums=(0,),
      )
    )
    eval_steps.append(
      jax.jit(
        step_lib.make_eval_step(model, stage.objective, optim.validation_kl_weight(config), config),
        in_shardings=(state_sharding, batch_sharding),
        out_shardings=replicated,
      )
    )
  forward = jax.jit(step_lib.make_forward(model), in_shardings=(state_sharding, batch_sharding))
  return Compiled(
    config,
    model,
    variant,
    tx,
    mesh,
    batch_sharding,
    state,
    kl_fn,
    stages,
    train_steps,
    eval_steps,
    forward,
  )


def setup(config, *, progress: bool = True, data: dataset_lib.Dataset | None = None) -> Job:
  """The config's dataset (`jaxvae.data.dataset.load`, unless given) and the `Compiled`
  built for it."""
  if data is None:
    data = dataset_lib.load(config, progress=progress)
  data_spe = pipeline.steps_per_epoch(data.train, config.train.batch_size)
  # An epoch of the trainer (validation, checkpoints, reports, patience, stage lengths) is
  # train.eval_every_steps steps when set: a step budget then means the same on any corpus.
  spe = int(config.train.get("eval_every_steps", 0)) or data_spe
  total = spe * total_epochs(config)
  if config.train.max_steps:
    total = min(total, config.train.max_steps)
  example = next(pipeline.eval_batches(data.train, config.train.batch_size))
  compiled = build(config, data.spec, example, spe, total)
  fields = {f.name: getattr(compiled, f.name) for f in dataclasses.fields(Compiled)}
  return Job(
    **fields,
    store=data.store,
    train_examples=data.train,
    val_examples=data.validation,
    spec=data.spec,
    steps_per_epoch=spe,
    total_steps=total,
    data_steps_per_epoch=data_spe,
  )
