"""The training loop: epochs and stages, periodic checkpoints, validation, early stopping,
logs, and what the caller asks to run at epoch ends (reports).

`train_and_evaluate` is the one entry point; it imports no evaluator or sampler: the caller
passes `epoch_hooks`, built from the run and its writer once they exist.
"""

from __future__ import annotations

from collections.abc import Callable
import contextlib
import dataclasses
import functools
import logging
import math
import os
import sys
import time

import jax
import tqdm

from jaxvae import errors
from jaxvae import faults
from jaxvae import multihost
from jaxvae import workdir as workdir_lib
from jaxvae.config import base as config_base
from jaxvae.data import dataset as dataset_lib
from jaxvae.data import pipeline
from jaxvae.training import checkpoint as ckpt_lib
from jaxvae.training import frozen
from jaxvae.training import mesh as mesh_lib
from jaxvae.training import metrics as metrics_lib
from jaxvae.training import preemption
from jaxvae.training import resources
from jaxvae.training import timing
from jaxvae.training import writer as writer_lib
from jaxvae.training.builder import Job
from jaxvae.training.builder import setup
from jaxvae.training.builder import total_epochs
from jaxvae.training.state import RunMeta
from jaxvae.training.state import TrainState

# (state, epoch) -> None, run after an epoch's record and best checkpoint, before its latest
# checkpoint; it decides itself on which epochs it does something (reports: every N). A hook
# may work on in the background after it returns: its `close()`, if it has one, is called
# when training ends, before the log writer closes.
EpochHook = Callable[[TrainState, int], None]
# (job, writer) -> the hooks of this run.
HookFactory = Callable[[Job, writer_lib.Writer], list[EpochHook]]


def train_and_evaluate(
  config,
  workdir: str,
  *,
  progress: bool = True,
  epoch_hooks: HookFactory | None = None,
  epoch_callback: Callable[[dict], None] | None = None,
) -> RunMeta:
  """Trains (or resumes) in `workdir`; returns the final run metadata.

  The caller holds the workdir's lock (`jaxvae.workdir.Lock`: one writer per workdir).
  `epoch_hooks(job, writer)` builds what runs at epoch ends
  (`jaxvae.evaluators.report.training_hooks`: the listening reports).
  `epoch_callback(record)` sees each epoch's metrics after its checkpoint (tuning uses it to
  prune); an exception it raises ends the run there.
  """
  stops = preemption.StopRequests(config_base.parse_duration(config.train.max_runtime) or 0.0)
  workdir = workdir_lib.ensure_writable(workdir)
  if multihost.is_main_process():
    workdir_lib.remove_stale_files(workdir)
  where = _Where()
  try:
    with stops:
      return _train(config, workdir, progress, epoch_hooks, epoch_callback, stops, where)
  except Exception as e:
    if workdir_lib.is_disk_full(e):
      raise workdir_lib.disk_full_error(
        e, workdir, where.what, where.step, ckpt_lib.resume_step(workdir)
      ) from None
    raise


@dataclasses.dataclass
class _Where:
  """What the run was doing, for an error that ends it (a full disk)."""

  what: str = "loading the data"
  step: int | None = None


def _weights_from(job: Job, config) -> TrainState:
  """Weights from `init_from` (fine-tuning / progressive stages); optimizer fresh. A frozen
  run's weights (`training.frozen`) stay the ones this run loaded, never the source's."""
  own = {k: v for k, v in job.state.model_state.items() if k == frozen.COLLECTION}
  template = job.state.replace(
    model_state={k: v for k, v in job.state.model_state.items() if k not in own}
  )
  params, model_state = ckpt_lib.restore_weights(config.init_from, template, config.model.name)
  model_state = {**model_state, **own}
  state = job.state.replace(params=params, model_state=model_state, opt_state=job.tx.init(params))
  return jax.device_put(state, mesh_lib.replicated(job.mesh))


def _check_best_metric(job: Job, best: metrics_lib.BestMetric) -> None:
  """`train.best_metric` must be a validation metric of every stage's objective (traced on
  an example batch, nothing compiled): a typo fails before training, not after an epoch. A
  per-source metric is checked at the first evaluation instead."""
  if best.name == "loss" or best.per_source:  # every objective reports 'loss'
    return
  batch = job.spec.example_batch(job.config.train.batch_size)
  for eval_step in job.eval_steps:
    out = jax.eval_shape(eval_step, job.state, batch)
    metrics_lib.check_best_metric(job.config, metrics_lib.split_metric_names(out))


def _follow_best_metric(meta: RunMeta, best: metrics_lib.BestMetric) -> None:
  """A resumed run whose `train.best_metric` changed chooses its best checkpoint anew."""
  name, direction = best.name, best.direction
  if (meta.best_metric, meta.best_direction) != (name, direction):
    logging.info(
      "train.best_metric is now %r (%s; was %r, %s): the best checkpoint is chosen anew from "
      "the next evaluation on",
      name,
      direction,
      meta.best_metric,
      meta.best_direction,
    )
    meta.best_val, meta.best_step, meta.bad_epochs = math.inf, -1, 0
    meta.best_metric, meta.best_direction = name, direction


def _train(config, workdir, progress, epoch_hooks, epoch_callback, stops, where) -> RunMeta:
  phases = timing.Phases()
  try:
    with phases("data"):
      data = dataset_lib.load(config, progress=progress)
    where.what = "setting up the run"
    # Read before _set_up rewrites the run file.
    changed = writer_lib.model_changes(workdir, config, data.spec.input_shape)
    with phases("setup"):
      job, best, iterator = _set_up(config, data, workdir, progress, changed)
    ckpts = ckpt_lib.Checkpoints(workdir, config.train.keep_checkpoints, writer=True)
    try:
      where.what = "restoring the latest checkpoint"
      with phases("checkpoints"):
        state, meta = _restore(job, ckpts, iterator, best, workdir)
      where.what, where.step = "training", int(state.step)
      with _outputs(job, workdir, int(state.step), epoch_hooks, phases) as (writer, hooks):
        loop = _Loop(job, ckpts, writer, hooks, progress, epoch_callback, phases, stops, where)
        state, meta = loop.train(state, meta, iterator)
    finally:
      with phases("checkpoints"), _unless_raising():
        ckpts.close()  # waits for a save still being written
    where.what = "writing the end-of-run files"
    if multihost.is_main_process():
      with phases("logging"):
        writer_lib.finish(workdir, config, meta, loop.monitor.summary(), phases.summary)
    return meta
  finally:
    phases.close()


def _set_up(config, data, workdir: str, progress: bool, changed: list[str]):
  """The job (model, state, steps), its best metric (resolved here, once) and the training
  batches' iterator. Checkpoints of another model are refused (naming what `changed`: model
  keys, the features' shape) before the run file is rewritten with this config."""
  job = setup(config, progress=progress, data=data)
  ckpt_lib.check_same_model(workdir, job.state, changed)
  logging.info(
    "Training on %d devices (%s, %d process(es)), global batch %d",
    job.mesh.devices.size,
    jax.devices()[0].platform,
    jax.process_count(),
    config.train.batch_size,
  )
  best = metrics_lib.BestMetric.of_config(config)
  _check_best_metric(job, best)
  writer_lib.check_tokenizer(workdir, job.store, "the workdir")
  if config.init_from:
    writer_lib.check_tokenizer(config.init_from, job.store, "config key 'init_from'")
  if multihost.is_main_process():
    writer_lib.mark_workdir(workdir, config, job.store)
  iterator = pipeline.train_iterator(
    job.train_examples,
    config.train.batch_size,
    config.seed,
    config,
    shard=jax.process_index(),
    num_shards=jax.process_count(),
  )
  return job, best, iterator


def _restore(job: Job, ckpts, iterator, best: metrics_lib.BestMetric, workdir: str):
  """(state, meta) of the latest checkpoint (the iterator restored with them), else fresh
  ones (weights from `init_from` when set)."""
  if ckpts.latest_step() is not None:
    state, meta = ckpts.restore_latest(job.state, iterator)
    logging.info("Resumed from step %d in %s", int(state.step), workdir)
  else:
    state = _weights_from(job, job.config) if job.config.init_from else job.state
    meta = RunMeta(best_metric=best.name, best_direction=best.direction)
  _follow_best_metric(meta, best)
  if multihost.is_main_process():
    # Rows of steps this run redoes (or a torn line) would appear twice.
    workdir_lib.repair_metrics(os.path.join(workdir, "metrics.jsonl"), int(state.step))
    ckpt_lib.warn_if_disk_is_short(workdir, job.state, job.config, int(state.step), job.total_steps)
  return state, meta


@contextlib.contextmanager
def _outputs(job: Job, workdir: str, step: int, epoch_hooks, phases):
  """The run's log writer (from `step` on) and its epoch hooks; at the end the hooks close
  first (a report still being drawn writes to the log), then the writer."""
  main_process = multihost.is_main_process()
  writer = (writer_lib.Writer if main_process else writer_lib.NullWriter)(
    workdir, job.config, purge_step=step + 1
  )
  try:
    with phases("reports"):
      hooks = epoch_hooks(job, writer) if epoch_hooks is not None else []
    try:
      yield writer, hooks
    except BaseException:
      with contextlib.suppress(Exception):  # the run's own error is the one to report
        _close_hooks(hooks)
      raise
    with phases("reports"):
      _close_hooks(hooks)  # waits for a report still being drawn
  finally:
    with phases("logging"), _unless_raising():
      writer.close()


@contextlib.contextmanager
def _unless_raising():
  """Inside a `finally`: an error of the block does not replace the one already on its way
  out (a full disk fails the save in flight and the closing writers again), and is raised
  when there is none."""
  pending = sys.exc_info()[1]
  try:
    yield
  except Exception:
    if pending is None:
      raise
    logging.debug("while ending the run after %r", pending, exc_info=True)


def _close_hooks(hooks) -> None:
  """Calls `close()` of the hooks that have one (every one, then raises the first error)."""
  failures = []
  for hook in hooks:
    try:
      getattr(hook, "close", lambda: None)()
    except Exception as e:  # noqa: BLE001 - raised below, after the others closed
      failures.append(e)
  if failures:
    raise failures[0]


def _in_phase(name: str):
  """Counts a `_Loop` method's wall time to phase `name` (`timing.Phases` nests: the phase
  around the call pauses meanwhile)."""

  def wrap(method):
    @functools.wraps(method)
    def timed(self, *args, **kwargs):
      with self.phases(name):
        return method(self, *args, **kwargs)

    return timed

  return wrap


@dataclasses.dataclass
class _Epoch:
  """One epoch's step metrics: on device as the steps return them (`rows`), host copies of
  those pulled so far (`pulled`, by `sync`), and host rows of the steps this epoch ran
  before a mid-epoch resume (`carried`)."""

  first_step: int  # the step of rows[0]
  watch: metrics_lib.NonfiniteWatch
  carried: list[dict]
  rows: list = dataclasses.field(default_factory=list)
  pulled: list[dict] = dataclasses.field(default_factory=list)
  started: float = dataclasses.field(default_factory=time.time)

  def sync(self) -> None:
    """Host copies of the rows not pulled yet (waits for their steps); checks divergence.
    The host waits for the device only here: at log steps, checkpoints and the epoch end."""
    fetched = jax.device_get(self.rows[len(self.pulled) :])
    new = [{k: float(v) for k, v in r.items()} for r in fetched]
    self.watch.update(new, self.first_step + len(self.pulled))
    self.pulled.extend(new)

  @property
  def host_rows(self) -> list[dict]:
    return self.carried + self.pulled


@dataclasses.dataclass
class _Loop:
  """The epoch loop of one run (what `_train` set up). Each method counts its time to one
  phase of `timing.Phases` (`_in_phase`); the steps themselves are `train_steps`."""

  job: Job
  ckpts: ckpt_lib.Checkpoints
  writer: writer_lib.Writer
  hooks: list[EpochHook]
  progress: bool
  epoch_callback: Callable[[dict], None] | None
  phases: timing.Phases
  stops: preemption.StopRequests
  where: _Where
  monitor: resources.Monitor = dataclasses.field(default_factory=resources.Monitor)
  watch: metrics_lib.NonfiniteWatch | None = None
  gather: Callable | None = None  # agrees on stopping across processes (None: one process)
  steps_here: int = 0  # steps this process ran: a budget stop comes after at least one
  # What stopping is expected to take (train.max_runtime's reserve), measured as the run goes.
  step_s: float = 0.0  # one step (the last logged window's mean, or the epoch's)
  save_s: float = 0.0  # the longest checkpoint save call
  epoch_end_s: float = 0.0  # the last epoch end (validation, records, reports)
  write_s: float = 0.0  # writing a checkpoint of the state at a slow disk's 200 MB/s
  eval_s: float = 0.0  # the last validation (compilation included)

  def train(self, state: TrainState, meta: RunMeta, iterator):
    """Stages, and epochs within them, until the step budget or early stopping; a stop
    request ends it after a step with that step saved (`preemption.Stopped`)."""
    t = self.job.config.train
    self.watch = metrics_lib.NonfiniteWatch(t.max_nonfinite_steps, t.max_nonfinite_share)
    self.write_s = ckpt_lib.state_bytes(state) / 2e8
    self.gather = multihost.gather_flags if jax.process_count() > 1 else None
    self.stops.armed = True  # from here a signal stops the run after a step, with its save
    while self._advance_stage(meta) and int(state.step) < self.job.total_steps:
      if not meta.stage_started:
        state = self._start_stage(state, meta)
      state, epoch = self._train_epoch(state, meta, iterator)
      self._end_epoch(state, meta, epoch, iterator)
      step = int(state.step)
      if step < self.job.total_steps and self._advance_stage(meta):
        reason = self._stop_reason(step, ends_epoch=True, synced=True)
        if reason is not None:
          self._stop(reason, step)  # the epoch's save is the resume point
    self._record_end(state, meta)
    return state, meta

  def _record_end(self, state: TrainState, meta: RunMeta) -> None:
    """Why and where training ended (`RunMeta.stop_reason`), for the run file and tables."""
    step, max_steps = int(state.step), int(self.job.config.train.max_steps)
    if meta.stopped_early:
      meta.stop_reason = "patience"
    elif max_steps and step >= max_steps:
      meta.stop_reason = "max_steps"
    else:
      meta.stop_reason = "epochs"
    meta.stop_step, meta.data_epochs = step, round(self.job.data_epochs(step), 2)

  @_in_phase("train_steps")
  def _train_epoch(self, state: TrainState, meta: RunMeta, iterator):
    """The rest of the epoch's steps (all of them unless resumed mid-epoch): logs every
    `log_every_steps`, saves every `checkpoint_every_steps`, stops when asked."""
    job, t = self.job, self.job.config.train
    step = int(state.step)
    steps = min(job.steps_per_epoch - (step - meta.epoch_start_step), job.total_steps - step)
    epoch = _Epoch(step + 1, self.watch, list(meta.epoch_rows))
    train_step = job.train_steps[meta.stage]
    bar = tqdm.tqdm(
      total=steps,
      desc=f"epoch {meta.epoch + 1}/{total_epochs(job.config)}",
      disable=not self.progress,
      leave=False,
    )
    window_start, window_step = time.time(), step
    with contextlib.closing(bar):
      for _ in range(steps):
        state, metrics = train_step(state, job.put(next(iterator)))
        faults.point("train.step")
        epoch.rows.append(metrics)
        step += 1
        self.steps_here += 1
        self.where.step = step
        bar.update(1)
        if step % t.log_every_steps == 0:
          epoch.sync()
          self._log_window(epoch.pulled, step - window_step, time.time() - window_start, step, bar)
          window_start, window_step = time.time(), step
        # Not on an epoch's last step (nor the run's, when max_steps cuts the epoch short):
        # the epoch-end save covers it, and a resume from there must still end the epoch.
        if step - meta.epoch_start_step < job.steps_per_epoch and step < job.total_steps:
          self._mid_epoch(step, state, iterator, meta, epoch)
    epoch.sync()  # every step of the epoch has finished: the clock now measures completed work
    return state, epoch

  def _mid_epoch(self, step: int, state, iterator, meta: RunMeta, epoch: _Epoch) -> None:
    """A mid-epoch checkpoint when one is due, and a stop (after saving) when asked."""
    t = self.job.config.train
    saved = False
    if t.checkpoint_every_steps and step % t.checkpoint_every_steps == 0:
      epoch.sync()
      meta.epoch_rows = epoch.host_rows  # a mid-epoch checkpoint keeps the epoch's rows
      self._save(step, state, iterator, meta)
      saved = True
    ends_epoch = step + 1 - meta.epoch_start_step >= self.job.steps_per_epoch
    reason = self._stop_reason(step, ends_epoch)
    if reason is not None:
      epoch.sync()
      if not saved:
        meta.epoch_rows = epoch.host_rows
        self._save(step, state, iterator, meta, stopping=True)
      self._stop(reason, step)

  def _end_epoch(self, state: TrainState, meta: RunMeta, epoch: _Epoch, iterator) -> None:
    """Divergence check, validation, the epoch record, the best checkpoint and early
    stopping, the hooks, then the epoch's checkpoint. Updates `meta` in place."""
    end_start = time.time()
    seconds = end_start - epoch.started
    self.step_s = seconds / max(len(epoch.pulled), 1)
    rows, meta.epoch_rows = epoch.host_rows, []
    self._check_epoch(rows, meta)
    val_metrics = self._validate(state, meta.stage)
    record = self._record(state, meta, rows, val_metrics, seconds, len(epoch.pulled))
    self._keep_best(state, meta, val_metrics)
    self._run_hooks(state, meta.epoch)
    self.epoch_end_s = time.time() - end_start
    self._save(int(state.step), state, iterator, meta)
    if self.epoch_callback is not None:
      self.epoch_callback(record)
    self.phases.end_epoch()

  def _stop(self, reason: str, step: int) -> None:
    """Waits for the save of `step` to land (a failed save raises its own error, not this
    one), then stops the run."""
    with self.phases("checkpoints"):
      self.ckpts.settle()
    raise preemption.Stopped(reason, step)

  def _check_epoch(self, rows: list[dict], meta: RunMeta) -> None:
    """Divergence by the epoch's share of skipped steps; the checkpoints saved during the
    epoch hold the broken parameters, so they go and its start is the resume point."""
    try:
      self.watch.check_epoch(rows, meta.epoch + 1, meta.epoch_start_step + 1)
    except errors.DivergedError as e:
      dropped = self.ckpts.discard_after(meta.epoch_start_step)
      resume = (
        f"the re-run resumes from the checkpoint of step {meta.epoch_start_step}"
        if meta.epoch_start_step
        else "a re-run starts again"
      )
      if dropped:
        steps = ", ".join(map(str, dropped))
        resume = f"the checkpoints saved during that epoch (steps {steps}) were removed; {resume}"
      raise errors.DivergedError(f"{e}. Nothing of it is kept: {resume}") from None

  @_in_phase("checkpoints")
  def _save(self, step, state, iterator, meta, stopping: bool = False) -> None:
    start = time.time()
    self.ckpts.save(step, state, iterator, meta)
    if stopping:
      faults.point("stop.saving")
      self.ckpts.settle()  # the stop's checkpoint has landed before the run says so
    self.save_s = max(self.save_s, time.time() - start)

  def _stop_reason(self, step: int, ends_epoch: bool, synced: bool | None = None) -> str | None:
    """Why the run stops after `step` (a signal, the budget, another process), or None.
    With several processes the hosts compare only where they meet (log steps, epoch ends)."""
    if synced is None:
      synced = step % self.job.config.train.log_every_steps == 0
    if self.gather is not None and not synced:
      return None
    reserve = 2 * self.step_s + self.save_s + self.write_s + 1.0
    if self.gather is not None:  # the next chance to stop is the next log step
      reserve += self.job.config.train.log_every_steps * self.step_s
    if ends_epoch:
      reserve += self.epoch_end_s
    local = self.stops.requested()
    if local is None and self.steps_here and self.stops.expired(reserve):
      local = self.stops.requested()
    return preemption.agree(local, self.gather)

  @_in_phase("logging")
  def _log_window(self, pulled, steps: int, seconds: float, step: int, bar) -> None:
    """Logs the last `steps` steps' mean metrics and the resource sample at a log step."""
    t = self.job.config.train
    logged = metrics_lib.mean_metrics(pulled[-t.log_every_steps :])
    self.step_s = seconds / max(steps, 1)
    system = self.monitor.sample(steps, seconds, t.batch_size)
    rate = system["system/samples_per_s"]
    self.writer.scalars(
      step, {f"train/{k}": v for k, v in logged.items()} | {"train/samples_per_s": rate} | system
    )
    bar.set_postfix(
      loss=f"{logged.get('loss', float('nan')):.4g}",
      samples_s=f"{rate:.0f}",
      mem_mb=f"{system['system/host_rss_mb']:.0f}",
    )

  def _start_stage(self, state: TrainState, meta: RunMeta) -> TrainState:
    job = self.job
    stage = job.stages[meta.stage]
    fine_tuning = job.config.init_from and meta.stage == 0
    if stage.on_start is not None and not fine_tuning:
      logging.info("Stage '%s': initializing from the training data", stage.name)
      batches = lambda: (
        job.put(b) for b in pipeline.eval_batches(job.train_examples, job.config.train.batch_size)
      )
      state = stage.on_start(state, job.model, batches, job.config)
      state = jax.device_put(state, mesh_lib.replicated(job.mesh))
    meta.stage_started = True
    return state

  def _advance_stage(self, meta: RunMeta) -> bool:
    """Moves to the next stage when this one is done; False when training is over."""
    stages = self.job.stages
    if meta.stage_epochs < stages[meta.stage].epochs and not meta.stage_stopped:
      return True
    if meta.stage + 1 >= len(stages):
      return False
    # Validation losses of different objectives do not compare: best and patience restart.
    meta.stage += 1
    meta.stage_epochs, meta.stage_started, meta.stage_stopped = 0, False, False
    meta.best_val, meta.best_step, meta.bad_epochs = math.inf, -1, 0
    return True

  @_in_phase("evaluation")
  def _validate(self, state: TrainState, stage: int) -> dict:
    start = time.time()
    val_metrics = metrics_lib.evaluate(self.job, state, self.job.val_examples, stage)
    self.eval_s = time.time() - start
    return val_metrics

  @_in_phase("logging")
  def _record(self, state, meta: RunMeta, rows, val_metrics: dict, seconds: float, timed: int):
    """The epoch's record (train means of `rows`, validation metrics, throughput of the
    `timed` steps this process ran in `seconds`) into `meta.history` and the logs."""
    config, stage, step = self.job.config, meta.stage, int(state.step)
    histograms = val_metrics.pop("histograms", {})
    record = {
      "epoch": meta.epoch + 1,
      "step": step,
      "seconds": round(seconds, 3),
      "samples_per_s": round(timed * config.train.batch_size / max(seconds, 1e-9), 2),
      "eval_seconds": round(self.eval_s, 3),
    }
    if len(self.job.stages) > 1:
      record["stage"] = self.job.stages[stage].name
    record |= {f"train/{k}": v for k, v in metrics_lib.mean_metrics(rows).items()}
    record |= {f"val/{k}": v for k, v in val_metrics.items()}
    meta.history = meta.history + [record]
    meta.wall_s += seconds
    meta.epoch, meta.epoch_start_step = meta.epoch + 1, step
    meta.stage_epochs += 1
    self.writer.epoch(record)
    for name, counts in histograms.items():
      self.writer.histogram(f"val/{name}", counts, step)
    faults.point("epoch.logged", os.path.join(self.writer.workdir, "metrics.jsonl"))
    return record

  def _keep_best(self, state: TrainState, meta: RunMeta, val_metrics: dict) -> None:
    """The best checkpoint when the best metric improved, else a step toward early stopping.
    A model with non-finite outputs (loss) is never the best one, even where the best
    metric (an accuracy, a code usage) stays finite."""
    config, name = self.job.config, meta.best_metric
    if "/" in name:  # a per-source metric: the first evaluation shows whether it exists
      metrics_lib.check_best_metric(config, val_metrics)
    value = val_metrics[name]
    finite_outputs = math.isfinite(val_metrics.get("loss", 0.0))
    if not (math.isfinite(value) and finite_outputs):
      logging.warning(
        "epoch %d: the validation %s is not finite (the model's outputs are not): this "
        "checkpoint is never the best one",
        meta.epoch,
        name if not math.isfinite(value) else "loss",
      )
    has_best, direction = meta.best_step >= 0, meta.best_direction
    # Patience restarts only on an improvement by more than train.min_delta of the best.
    margin = float(config.train.get("min_delta", 0.0)) * abs(meta.best_val) if has_best else 0.0
    target = meta.best_val + (margin if direction == "max" else -margin)
    enough = finite_outputs and metrics_lib.improves(value, target, has_best, direction)
    meta.bad_epochs = 0 if enough else meta.bad_epochs + 1
    if finite_outputs and metrics_lib.improves(value, meta.best_val, has_best, direction):
      meta.best_val, meta.best_step = value, int(state.step)
      with self.phases("checkpoints"):
        self.ckpts.save_best(int(state.step), state, meta)
    if not enough:
      if config.train.patience and meta.bad_epochs >= config.train.patience:
        meta.stage_stopped = True
        meta.stopped_early = meta.stage == len(self.job.stages) - 1
        logging.info(
          "Early stopping at epoch %d: val %s did not improve for %d epochs",
          meta.epoch,
          name,
          meta.bad_epochs,
        )
    logging.info(
      "epoch %d: train loss %.5g, val loss %.5g%s (best %.5g)",
      meta.epoch,
      meta.history[-1].get("train/loss", float("nan")),
      val_metrics["loss"],
      "" if name == "loss" else f", val {name} {value:.5g}",
      meta.best_val,
    )

  @_in_phase("reports")
  def _run_hooks(self, state: TrainState, epoch: int) -> None:
    for hook in self.hooks:
      hook(state, epoch)
