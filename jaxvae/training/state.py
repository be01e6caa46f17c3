"""What a run carries from step to step: the device state (`TrainState`) and the host-side
bookkeeping (`RunMeta`), both checkpointed together."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax
from flax import struct
import flax.linen as nn
from flax.training import dynamic_scale as dynamic_scale_lib
import jax
import jax.numpy as jnp
import optax

RNG_STREAMS = ("sample", "dropout", "vq", "augment")


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


def create_state(model, make_tx, batch, config) -> tuple[TrainState, optax.GradientTransformation]:
  """Initial state; `make_tx(params)` builds the optimizer (it may depend on the params)."""
  rng = jax.random.PRNGKey(config.seed)
  variables = jax.jit(lambda b: init_variables(model, b, jax.random.fold_in(rng, 1)))(batch)
  variables = flax.core.unfreeze(variables)
  params = variables.pop("params")
  tx = make_tx(params)
  scale = (
    dynamic_scale_lib.DynamicScale(scale=config.train.loss_scale_init)
    if config.dtype == "float16"
    else None
  )
  # One compiled init instead of one small compile per optimizer-state leaf.
  state = TrainState(
    step=jnp.int32(0),
    params=params,
    model_state=variables,
    opt_state=jax.jit(tx.init)(params),
    rng=rng,
    dynamic_scale=scale,
  )
  return state, tx


@dataclasses.dataclass
class RunMeta:
  """Where a run is, beyond the device state: epochs, stages, early stopping, the epoch
  records. Saved as JSON in every checkpoint (`to_json` / `from_json`, the same keys the
  checkpoints of earlier versions hold, so their workdirs resume)."""

  epoch: int = 0  # epochs completed
  epoch_start_step: int = 0  # the step the current epoch started after
  stage: int = 0  # index into the variant's stages
  stage_epochs: int = 0  # epochs completed in the current stage
  stage_started: bool = False  # its on_start hook has run
  stage_stopped: bool = False  # early stopping ended it
  best_val: float = math.inf  # best value of train.best_metric in the current stage
  best_step: int = -1  # -1: no best yet
  best_metric: str = "loss"  # the validation metric best_val is a value of
  best_direction: str = "min"  # and whether lower ('min') or higher ('max') is better
  bad_epochs: int = 0  # epochs in a row without improvement
  history: list[dict] = dataclasses.field(default_factory=list)  # one record per epoch
  stopped_early: bool = False  # early stopping ended the run (its last stage)
  # Why training ended ('' while it runs): 'patience' (early stopping), 'max_steps' (the
  # train.max_steps budget) or 'epochs' (every stage ran its epochs); at which step, after
  # how many passes over the training split.
  stop_reason: str = ""
  stop_step: int = 0
  data_epochs: float = 0.0
  wall_s: float = 0.0  # seconds spent in training steps
  # Host metrics of the current epoch's steps, kept by mid-epoch checkpoints: a run resumed
  # mid-epoch reports (and judges divergence on) the whole epoch, as an uninterrupted one.
  epoch_rows: list[dict] = dataclasses.field(default_factory=list)

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, value: dict) -> RunMeta:
    """Keys this version does not know are ignored; missing ones take their defaults."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in value.items() if k in names})
