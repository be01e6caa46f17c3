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

from jaxvae.training import checkpoint as ckpt_lib
from jaxvae import errors
from jaxvae import faults
from jaxvae.training import writer as monitor
from jaxvae import multihost
from jaxvae.training import optim
from jaxvae.variants import registry
from jaxvae import workdir as workdir_lib
from jaxvae.config.loading import ConfigError
from jaxvae.audio import augment
from jaxvae.data import pipeline
from jaxvae.data import store as store_lib

RNG_STREAMS = ("sample", "dropout", "vq", "augment")


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


def create_state(model, make_tx, batch, config) -> tuple[TrainState, optax.GradientTransformation]:
  """Initial state; `make_tx(params)` builds the optimizer (it may depend on the params)."""
  rng = jax.random.PRNGKey(config.seed)
  variables = jax.jit(lambda b: init_variables(model, b, jax.random.fold_in(rng, 1)))(batch)
  variables = flax.core.unfreeze(variables)
  params = variables.pop("params")
  tx = make_tx(params)
  scale = (dynamic_scale_lib.DynamicScale(scale=config.train.loss_scale_init)
           if config.dtype == "float16" else None)
  # One compiled init instead of one small compile per optimizer-state leaf.
  state = TrainState(step=jnp.int32(0), params=params, model_state=variables,
                     opt_state=jax.jit(tx.init)(params), rng=rng, dynamic_scale=scale)
  return state, tx


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
    # Spec masking is on the model's input only: the objective reconstructs the clean batch.
    inputs = augment.maybe_spec_mask(rngs.pop("augment"), batch, config)

    def loss_fn(params):
      outputs, new_model_state = _apply(model, params, state.model_state, inputs, True, rngs)
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
      # A float16 overflow makes the gradient norm non-finite, so `skip_nonfinite` drops the
      # update like any other; the scaler has already backed off.
      metrics = dict(metrics, loss_scale=scale.scale, finite=finite.astype(jnp.float32))
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads))
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              model_state=model_state, dynamic_scale=scale)
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
    checked = [v for k, v in metrics.items()
               if k.startswith(("loss", "grad_norm")) and k != "loss_scale"]
    ok = jnp.all(jnp.isfinite(jnp.stack([jnp.asarray(v, jnp.float32) for v in checked])))
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
    new_state = new_state.replace(params=keep(new_state.params, state.params),
                                  opt_state=keep(new_state.opt_state, state.opt_state),
                                  model_state=keep(new_state.model_state, state.model_state))
    return new_state, dict(metrics, nonfinite=1.0 - ok.astype(jnp.float32))

  return guarded


def make_eval_step(model, objective, kl_fn, config) -> Callable:
  """`eval_step(state, batch) -> metrics`, deterministic (a fixed key), with `count`."""

  def eval_step(state: TrainState, batch):
    rngs = step_rngs(state.rng, jnp.int32(-1))
    outputs, _ = _apply(model, state.params, state.model_state, batch, False, rngs)
    _, metrics = objective(outputs, batch, kl_weight=kl_fn(state.step), config=config)
    # Histograms such as VQ code usage are summed over the split, not averaged.
    counts = {k: v for k, v in outputs.items() if k.endswith("_counts")}
    return dict(metrics, count=jnp.sum(batch["mask"]), counts=counts)

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
  stages: list[registry.Stage]
  train_steps: list[Callable]
  eval_steps: list[Callable]
  forward: Callable

  @property
  def train_step(self) -> Callable:
    return self.train_steps[-1]

  @property
  def eval_step(self) -> Callable:
    return self.eval_steps[-1]

  def put(self, batch: dict) -> dict:
    """Host batch -> a global array sharded over the `data` axis (multi-host safe).

    `batch` is either this process's share (what `pipeline.train_iterator` yields: rows
    batch_size / process_count) or the whole global batch, the same on every process (e.g.
    `pipeline.eval_batches`); of a global batch each process contributes its own rows.
    """
    count, index = jax.process_count(), jax.process_index()
    out = {}
    for k, v in batch.items():
      v = np.asarray(v)
      if count > 1 and v.shape[0] == self.config.train.batch_size:
        share = v.shape[0] // count
        v = v[index * share:(index + 1) * share]
      out[k] = jax.make_array_from_process_local_data(self.batch_sharding, v)
    return out

  def gather(self, tree):
    """Device arrays (batch-sharded or replicated) -> numpy on every process."""
    return multihost.to_host(tree)


def initialize_distributed() -> None:
  """`jax.distributed.initialize()` for a multi-host run (`config.distributed=True`).

  JAX finds the coordinator itself under SLURM, Open MPI and Kubernetes (with the
  `kubernetes` package); elsewhere set JAX_COORDINATOR_ADDRESS (host:port of process 0) and
  JAX_NUM_PROCESSES / JAX_PROCESS_ID, which this passes on.
  """
  kwargs = {}
  for env, arg in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id")):
    if os.environ.get(env):
      kwargs[arg] = int(os.environ[env])
  jax.distributed.initialize(**kwargs)
  logging.info("Process %d of %d; %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def is_main_process() -> bool:
  """Only process 0 writes logs, reports and run files; every process checkpoints."""
  return jax.process_index() == 0


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


def total_epochs(config) -> int:
  return sum(s.epochs for s in registry.get(config.model.name).stage_list(config))


def build(config, spec, example_batch: dict, steps_per_epoch: int, total_steps: int) -> Compiled:
  """Model, optimizer, replicated state and the sharded, jitted steps (no data needed)."""
  variant = registry.get(config.model.name)
  try:
    model = variant.build_model(config.model, spec, dtype=config.dtype)
  except KeyError as e:
    raise ConfigError(f"config key 'model': {e.args[0]}") from None
  mesh = make_mesh(config.train.num_devices)
  check_batch(config.train.batch_size, mesh)
  kl_fn = optim.kl_weight(config, steps_per_epoch, total_steps)
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P("data"))

  def make_tx(params):
    mult = variant.lr_multipliers(params, config) if variant.lr_multipliers else None
    tx = optim.optimizer(config, total_steps, mult)
    if variant.make_optimizer is not None:
      tx = variant.make_optimizer(config, total_steps, params, tx)
    return tx

  state, tx = create_state(model, make_tx, example_batch, config)
  state = jax.device_put(state, replicated)
  state_sharding = jax.tree.map(lambda _: replicated, state)
  stages = variant.stage_list(config)
  train_steps, eval_steps = [], []
  for stage in stages:
    step_fn = make_train_step(model, tx, stage.objective, kl_fn, config)
    if variant.make_train_step is not None:
      step_fn = variant.make_train_step(model, tx, stage.objective, kl_fn, config, step_fn)
    train_steps.append(jax.jit(skip_nonfinite(step_fn),
                               in_shardings=(state_sharding, batch_sharding),
                               out_shardings=(state_sharding, replicated), donate_argnums=(0,)))
    eval_steps.append(jax.jit(make_eval_step(model, stage.objective, kl_fn, config),
                              in_shardings=(state_sharding, batch_sharding),
                              out_shardings=replicated))
  forward = jax.jit(make_forward(model), in_shardings=(state_sharding, batch_sharding))
  return Compiled(model, variant, tx, mesh, batch_sharding, state, kl_fn, stages,
                  train_steps, eval_steps, forward)


def open_data(config, *, progress: bool = True) -> store_lib.Store:
  """The feature store (audio) or token store (MIDI) of the config's dataset."""
  if config.data.kind == "midi":
    from jaxvae.data import tokens
    return tokens.build(config, progress=progress)
  return store_lib.build(config, progress=progress)


def setup(config, *, progress: bool = True) -> Run:
  store = open_data(config, progress=progress)
  lyrics = pipeline.load_lyrics(config, store)
  train_ex = pipeline.split_examples(config, store, "train", lyrics)
  val_ex = pipeline.split_examples(config, store, "validation", lyrics)
  if len(val_ex) == 0:  # tiny datasets: validate on the training split rather than on nothing
    logging.warning("The validation split is empty; validating on the training split.")
    val_ex = train_ex
  spec = pipeline.data_spec(store, lyrics)
  spe = pipeline.steps_per_epoch(train_ex, config.train.batch_size)
  total = spe * total_epochs(config)
  if config.train.max_steps:
    total = min(total, config.train.max_steps)
  example = next(pipeline.eval_batches(train_ex, config.train.batch_size))
  c = build(config, spec, example, spe, total)
  return Run(config, store, train_ex, val_ex, spec, c.model, c.variant, c.tx, c.mesh,
             c.batch_sharding, c.state, spe, total, c.kl_fn, c.stages, c.train_steps,
             c.eval_steps, c.forward)


# ---------------------------------------------------------------------------------------------
# Evaluation helpers
# ---------------------------------------------------------------------------------------------

def evaluate(run: Run, state: TrainState, examples: pipeline.Examples,
             stage: int = -1) -> dict[str, float]:
  """Example-weighted means of the objective's metrics over a whole split.

  Histogram outputs (`*_counts`) are summed over the split instead; for each the result has
  `<name>s_used` (non-zero bins, e.g. `codes_used`) and `<name>_perplexity` (exp of the usage entropy), and the
  raw histogram is returned under `histograms`.
  """
  eval_step = run.eval_steps[stage]
  collected = [eval_step(state, run.put(b))
               for b in pipeline.eval_batches(examples, run.config.train.batch_size)]
  collected = jax.device_get(collected)
  weights = np.array([m["count"] for m in collected])
  out: dict[str, Any] = {}
  for key in collected[0]:
    if key not in ("count", "counts"):
      out[key] = float(np.sum([m[key] * w for m, w in zip(collected, weights)]) / weights.sum())
  histograms = {}
  for key in collected[0]["counts"]:
    total = np.sum([np.asarray(m["counts"][key], np.float64) for m in collected], axis=0)
    name = key[: -len("_counts")]
    p = total / max(total.sum(), 1e-12)
    out[f"{name}s_used"] = int(np.count_nonzero(total))
    out[f"{name}_perplexity"] = float(np.exp(-np.sum(p[p > 0] * np.log(p[p > 0]))))
    histograms[key] = total
  if histograms:
    out["histograms"] = histograms
  return out


def _mean_metrics(rows: list[dict]) -> dict[str, float]:
  """Means of host rows over the steps whose update was applied, and `nonfinite_steps`, how
  many were skipped. A metric with no finite value in the window is left out, not NaN."""
  if not rows:
    return {}
  out = {}
  for k in rows[0]:
    values = [r[k] for r in rows if not r.get("nonfinite") and np.isfinite(r[k])]
    if k != "nonfinite" and values:
      out[k] = float(np.mean(values))
  out["nonfinite_steps"] = float(sum(r.get("nonfinite", 0.0) for r in rows))
  return out


class NonfiniteWatch:
  """Counts skipped (non-finite) steps in a row from host copies of the step metrics, read
  only at log steps, checkpoints and epoch ends; raises DivergedError at the limit."""

  def __init__(self, limit: int):
    self.limit = limit
    self.run = 0  # skipped steps in a row, up to the last row seen
    self.first_step = -1
    self.bad_metrics: list[str] = []

  def update(self, rows: list[dict], first_step: int) -> None:
    """`rows` are host metrics of consecutive steps, the first at (1-based) `first_step`."""
    for i, row in enumerate(rows):
      if not row.get("nonfinite"):
        self.run = 0
        continue
      if self.run == 0:
        self.first_step = first_step + i
        self.bad_metrics = sorted(k for k, v in row.items()
                                  if k != "nonfinite" and not np.isfinite(v))
      self.run += 1
    if self.limit and self.run >= self.limit:
      what = ", ".join(self.bad_metrics) or "the updated parameters"
      raise errors.DivergedError(
          f"training diverged: {self.run} steps in a row from step {self.first_step} had a "
          f"non-finite {what} (their updates were skipped; train.max_nonfinite_steps is "
          f"{self.limit}). The last checkpoint before them is the resume point. Try a lower "
          "train.lr, a smaller train.clip_norm, or dtype float32 (or bfloat16 instead of "
          "float16)")


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------

def _fresh_meta() -> dict:
  """Host-side run bookkeeping, checkpointed as JSON next to the state."""
  return {"epoch": 0, "epoch_start_step": 0, "stage": 0, "stage_epochs": 0,
          "stage_started": False, "stage_stopped": False, "best_val": math.inf,
          "best_step": -1, "bad_epochs": 0, "history": [], "stopped_early": False,
          "wall_s": 0.0}


def _weights_from(run: Run, config) -> TrainState:
  """Weights from `init_from` (fine-tuning / progressive stages); optimizer fresh."""
  params, model_state = ckpt_lib.restore_weights(config.init_from, run.state,
                                                 config.model.name)
  state = run.state.replace(params=params, model_state=model_state,
                            opt_state=run.tx.init(params))
  return jax.device_put(state, NamedSharding(run.mesh, P()))


def _start_stage(run: Run, state: TrainState, meta: dict) -> TrainState:
  stage = run.stages[meta["stage"]]
  fine_tuning = run.config.init_from and meta["stage"] == 0
  if stage.on_start is not None and not fine_tuning:
    logging.info("Stage '%s': initializing from the training data", stage.name)
    batches = lambda: (run.put(b) for b in pipeline.eval_batches(
        run.train_examples, run.config.train.batch_size))
    state = stage.on_start(state, run.model, batches, run.config)
    state = jax.device_put(state, NamedSharding(run.mesh, P()))
  meta.update(stage_started=True)
  return state


def train_and_evaluate(config, workdir: str, *, progress: bool = True,
                       epoch_callback: Callable[[dict], None] | None = None) -> dict:
  """Trains (or resumes) in `workdir`; returns the final run metadata.

  Holds the workdir's lock for the whole run (one writer per workdir). `epoch_callback(record)`
  sees each epoch's metrics after its checkpoint (tuning uses it to prune); an exception it
  raises ends the run there.
  """
  workdir = workdir_lib.ensure_writable(workdir)
  with workdir_lib.Lock(workdir, jax.process_index()):
    if is_main_process():
      workdir_lib.remove_stale_files(workdir)
    return _train(config, workdir, progress, epoch_callback)


def _train(config, workdir, progress, epoch_callback) -> dict:
  run = setup(config, progress=progress)
  logging.info("Training on %d devices (%s, %d process(es)), global batch %d",
               run.mesh.devices.size, jax.devices()[0].platform, jax.process_count(),
               config.train.batch_size)
  main_process = is_main_process()
  if main_process:
    monitor.mark_workdir(workdir, config, run.store)
  ckpts = ckpt_lib.Checkpoints(workdir, config.train.keep_checkpoints)
  iterator = pipeline.train_iterator(run.train_examples, config.train.batch_size,
                                     config.seed, config, shard=jax.process_index(),
                                     num_shards=jax.process_count())
  try:
    if ckpts.latest_step() is not None:
      state, meta = ckpts.restore_latest(run.state, iterator)
      logging.info("Resumed from step %d in %s", int(state.step), workdir)
    else:
      state = _weights_from(run, config) if config.init_from else run.state
      meta = _fresh_meta()
    if main_process:  # rows of steps this run redoes (or a torn line) would appear twice
      workdir_lib.repair_metrics(os.path.join(workdir, "metrics.jsonl"), int(state.step))
    writer = (monitor.Writer if main_process else monitor.NullWriter)(
        workdir, config, purge_step=int(state.step) + 1)
    try:
      state, meta = _loop(run, state, meta, iterator, ckpts, writer, progress, epoch_callback)
    finally:
      writer.close()
  finally:
    ckpts.close()
  if main_process:
    monitor.finish(workdir, config, meta)
  return meta


def _advance_stage(run: Run, meta: dict) -> bool:
  """Moves to the next stage when this one is done; False when training is over."""
  stage = run.stages[meta["stage"]]
  if meta["stage_epochs"] < stage.epochs and not meta["stage_stopped"]:
    return True
  if meta["stage"] + 1 >= len(run.stages):
    return False
  # Validation losses of different objectives do not compare: best and patience restart.
  meta.update(stage=meta["stage"] + 1, stage_epochs=0, stage_started=False,
              stage_stopped=False, best_val=math.inf, best_step=-1, bad_epochs=0)
  return True


def _loop(run, state, meta, iterator, ckpts, writer, progress, epoch_callback=None):
  t = run.config.train
  spe = run.steps_per_epoch
  step = int(state.step)
  watch = NonfiniteWatch(t.max_nonfinite_steps)
  while _advance_stage(run, meta) and step < run.total_steps:
    if not meta["stage_started"]:
      state = _start_stage(run, state, meta)
    train_step = run.train_steps[meta["stage"]]
    epoch = meta["epoch"]
    epoch_start = time.time()
    steps = min(spe - (step - meta["epoch_start_step"]), run.total_steps - step)
    rows, pulled = [], []  # this epoch's step metrics: on device, and host copies of them
    first_step = step + 1

    def sync():
      """Host copies of the rows not pulled yet (waits for their steps); checks divergence."""
      new = jax.device_get(rows[len(pulled):])
      watch.update(new, first_step + len(pulled))
      pulled.extend(new)

    bar = tqdm.tqdm(total=steps, desc=f"epoch {epoch + 1}/{total_epochs(run.config)}",
                    disable=not progress, leave=False)
    window_start, window_step = time.time(), step
    for _ in range(steps):
      state, metrics = train_step(state, run.put(next(iterator)))
      faults.point("train.step")
      rows.append(metrics)
      step += 1
      bar.update(1)
      if step % t.log_every_steps == 0:
        sync()  # the host waits for the device only here, at checkpoints and epoch ends
        logged = _mean_metrics(pulled[-t.log_every_steps:])
        rate = (step - window_step) * t.batch_size / max(time.time() - window_start, 1e-9)
        window_start, window_step = time.time(), step
        writer.scalars(step, {f"train/{k}": v for k, v in logged.items()}
                       | {"train/samples_per_s": rate})
        bar.set_postfix(loss=f"{logged.get('loss', float('nan')):.4g}", samples_s=f"{rate:.0f}")
      # Not on an epoch's last step (nor the run's, when max_steps cuts the epoch short):
      # the epoch-end save covers it, and a resume from there must still end the epoch.
      if (t.checkpoint_every_steps and step % t.checkpoint_every_steps == 0
          and step - meta["epoch_start_step"] < spe and step < run.total_steps):
        sync()
        ckpts.save(step, state, iterator, meta)
    bar.close()
    sync()  # every step of the epoch has finished: the clock now measures completed work
    seconds = time.time() - epoch_start
    meta = _end_epoch(run, state, meta, pulled, ckpts, writer, seconds)
    ckpts.save(step, state, iterator, meta)
    if epoch_callback is not None:
      epoch_callback(meta["history"][-1])
  return state, meta


def _end_epoch(run, state, meta, rows, ckpts, writer, seconds):
  """Validation, the epoch record, early stopping, the best checkpoint and the report.
  `rows` are host copies of the epoch's step metrics; `seconds` the wall time of its steps."""
  config = run.config
  step = int(state.step)
  stage = meta["stage"]
  epoch = meta["epoch"] + 1
  train_metrics = _mean_metrics(rows)
  eval_start = time.time()
  val_metrics = evaluate(run, state, run.val_examples, stage)
  histograms = val_metrics.pop("histograms", {})
  record = {"epoch": epoch, "step": step, "seconds": round(seconds, 3),
            "samples_per_s": round(len(rows) * config.train.batch_size / max(seconds, 1e-9), 2),
            "eval_seconds": round(time.time() - eval_start, 3)}
  if len(run.stages) > 1:
    record["stage"] = run.stages[stage].name
  record |= {f"train/{k}": v for k, v in train_metrics.items()}
  record |= {f"val/{k}": v for k, v in val_metrics.items()}
  meta = dict(meta, history=meta["history"] + [record], wall_s=meta["wall_s"] + seconds,
              epoch=epoch, epoch_start_step=step, stage_epochs=meta["stage_epochs"] + 1)
  writer.epoch(record)
  for name, counts in histograms.items():
    writer.histogram(f"val/{name}", counts, step)
  faults.point("epoch.logged")
  val_loss = val_metrics["loss"]
  if val_loss < meta["best_val"] - 1e-12:
    meta.update(best_val=val_loss, best_step=step, bad_epochs=0)
    ckpts.save_best(step, state, meta)
  else:
    meta["bad_epochs"] += 1
    if config.train.patience and meta["bad_epochs"] >= config.train.patience:
      meta["stage_stopped"] = True
      meta["stopped_early"] = stage == len(run.stages) - 1
      logging.info("Early stopping at epoch %d: no improvement for %d epochs", epoch,
                   meta["bad_epochs"])
  logging.info("epoch %d: train loss %.5g, val loss %.5g (best %.5g)", epoch,
               train_metrics.get("loss", float("nan")), val_loss, meta["best_val"])
  # Reports decode and plot on one host; multi-host runs use --mode=eval/generate afterwards.
  if config.train.image_every_epochs and jax.process_count() == 1 and (
      epoch % config.train.image_every_epochs == 0 or epoch == 1):
    monitor.report(run, state, writer, step, epoch)
  return meta
