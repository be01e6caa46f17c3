"""Orbax checkpoints: the last N (state + data position + run metadata) and the best one.

The workdir is the only state: `latest` lets a re-run resume exactly (model, optimizer, step,
RNG, early-stopping bookkeeping and the Grain iterator position); `best` keeps the weights
with the best `train.best_metric` (default: the lowest validation loss) for eval, generation
and fine-tuning.

Saves are asynchronous (MaxText's and big_vision's way of keeping the accelerator busy):
`save` returns once Orbax has copied the state to host memory, and a background thread
writes it into a temporary folder that Orbax renames into place when it is complete. A kill
while a save is in flight leaves the previous checkpoint as the resume point. The best
checkpoint is never a second full write: at an epoch end the best state is also the latest
one, so once that latest save has landed `best/<step>` is made of hard links to its files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import contextlib
import dataclasses
import errno
import logging
import os
import pathlib
import shutil
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jaxvae import errors
from jaxvae import faults
from jaxvae import multihost
from jaxvae import workdir as workdir_lib
from jaxvae.training.state import RunMeta


def _options(keep: int, asynchronous: bool = False) -> ocp.CheckpointManagerOptions:
  # Orbax writes each step into a temporary folder and renames it when complete, so a kill at
  # any moment leaves either the previous or the new checkpoint, never half of one; the
  # writer removes a killed save's temporary folder when it starts.
  return ocp.CheckpointManagerOptions(
    max_to_keep=keep,
    create=True,
    enable_async_checkpointing=asynchronous,
    cleanup_tmp_directories=asynchronous,
  )


def finite(tree) -> jax.Array:
  """True when every float leaf of `tree` is finite (a traced bool inside jit)."""
  leaves = [
    jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)
  ]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


_all_finite = jax.jit(finite)


def check_finite(state, step: int) -> None:
  """Refuses to write non-finite parameters or model state into any checkpoint."""
  if not bool(_all_finite((state.params, state.model_state))):
    raise errors.DivergedError(
      f"the parameters are non-finite at step {step}; nothing was saved, the last "
      "checkpoint stays the resume point. Try a lower train.lr, a train.clip_norm, or "
      "dtype float32"
    )


def state_bytes(state) -> int:
  """Bytes of what a checkpoint of `state` holds (its arrays, uncompressed)."""
  return int(sum(getattr(x, "nbytes", 0) for x in jax.tree.leaves(state)))


def estimated_bytes(state) -> int:
  """What a checkpoint of `state` takes on disk: its arrays, plus Orbax's files and about
  2.5 KB of metadata per array (measured: 0.38 MB for a tiny conv VAE's 0.1 MB state)."""
  return state_bytes(state) + 2560 * len(jax.tree.leaves(state)) + 65536


def _folder_bytes(path: str) -> int:
  total = 0
  for folder, _, files in os.walk(path):
    for name in files:
      with contextlib.suppress(OSError):
        total += os.stat(os.path.join(folder, name)).st_size
  return total


def warn_if_disk_is_short(workdir: str, state, config, step: int, total_steps: int) -> None:
  """Logs what the run will write and warns, before training, when the workdir's disk has
  less free: the last `train.keep_checkpoints` checkpoints, one more while a save is in flight,
  and a best checkpoint (hard links while it is also a latest one, its own files once it has
  rotated out), less what the workdir already holds; plus 5 % for logs and reports."""
  if step >= total_steps:
    return
  one = estimated_bytes(state)
  keep = config.train.keep_checkpoints
  held = _folder_bytes(os.path.join(workdir, "checkpoints")) + _folder_bytes(
    os.path.join(workdir, "best")
  )
  need_mb = max((keep + 2) * one - held, 0) * 1.05 / 2**20
  free = workdir_lib.free_mb(workdir)
  logging.info(
    "Checkpoints: %.1f MB each, %d kept + best: about %.0f MB more on disk (%.0f MB free)",
    one / 2**20,
    keep,
    need_mb,
    free,
  )
  if free < need_mb:
    logging.warning(
      "The disk of '%s' has %.0f MB free and this run will write about %.0f MB more "
      "(checkpoints of %.1f MB x train.keep_checkpoints=%d, one in flight, best): it may stop "
      "with a full disk. Free space there, lower train.keep_checkpoints, or use another --workdir",
      workdir,
      free,
      need_mb,
      one / 2**20,
      keep,
    )


def resume_step(workdir: str) -> int | None:
  """The newest step under `workdir`'s checkpoints/ (what a re-run resumes from, when it
  restores), or None."""
  folder = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(folder):
    return None
  steps = [int(n) for n in os.listdir(folder) if n.isdigit()]
  return max(steps) if steps else None


def saved_steps(workdir: str) -> list[int]:
  """Steps saved under `workdir`'s checkpoints/ and best/ (by folder name; not opened)."""
  steps = set()
  for sub in ("checkpoints", "best"):
    folder = os.path.join(workdir, sub)
    if os.path.isdir(folder):
      steps.update(int(n) for n in os.listdir(folder) if n.isdigit())
  return sorted(steps)


def _restore_newest(manager, args_fn, what: str):
  """(step, restored) of the newest step of `manager` that restores; damaged steps (missing
  or truncated files, unreadable metadata) are skipped with a warning naming them."""
  damaged = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      return step, manager.restore(step, args=args_fn()), damaged
    except Exception as e:  # noqa: BLE001 - any failure to read a step means "damaged".
      reason = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
      logging.warning(
        "%s checkpoint at step %d cannot be restored (%s); trying an older one", what, step, reason
      )
      damaged.append((step, reason))
  return None, None, damaged


def params_mismatch(step_dir: str, template) -> str | None:
  """How the parameters saved in `step_dir` differ from `template.params` (names or shapes),
  or None when they agree or the step's metadata cannot be read (a damaged step is then
  found by the restore itself). Checked before restoring: Orbax would start reading a tree
  that cannot fit and leave those reads behind."""
  shapes = lambda tree: {p: tuple(getattr(v, "shape", ())) for p, v in _leaf_paths(tree)}
  try:
    meta = ocp.StandardCheckpointHandler().metadata(pathlib.Path(step_dir) / "state")
    saved = shapes(getattr(meta, "tree", meta)["params"])
  except Exception:  # noqa: BLE001 - unreadable metadata: leave it to the restore
    return None
  want = shapes(template.params)
  if saved == want:
    return None
  diff = sorted(set(saved) ^ set(want)) or sorted(k for k in want if saved[k] != want[k])
  first = diff[0]
  if first in saved and first in want:
    return f"{len(diff)} differ in shape, first {first}: saved {saved[first]}, now {want[first]}"
  side = "saved only" if first in saved else "in the model only"
  return f"{len(diff)} parameters are not in both, first {first} ({side})"


def check_same_model(workdir: str, template, changed: Sequence[str] = ()) -> None:
  """CheckpointError in one line when the newest step in `workdir`'s checkpoints/ holds
  parameters of another shape than `template`'s (`params_mismatch`), naming `changed` (what
  differs from the run file's model keys and features' shape, `writer.model_changes`);
  nothing without a step. Every process calls it; they refuse together if any finds a
  mismatch (one process going on alone would wait in Orbax's collective restore)."""
  directory = os.path.join(workdir, "checkpoints")
  step = resume_step(workdir)
  mismatch = step is not None and params_mismatch(os.path.join(directory, str(step)), template)
  if jax.process_count() > 1 and any(multihost.gather_flags(int(bool(mismatch)))):
    mismatch = mismatch or "found by another process"
  if mismatch:
    keys = f" What changed since they were saved: {'; '.join(changed)}." if changed else ""
    raise errors.CheckpointError(
      f"the checkpoints in '{directory}' hold another model's parameters ({mismatch}).{keys} "
      "Run with the config they were saved with (--config.KEY=VALUE) or another --workdir"
    )


class Checkpoints:
  """The `checkpoints/` (last N, asynchronous saves) and `best/` (1) of a workdir.

  Every save lands whole and only after the state was checked finite. A step that already
  exists is replaced: a run killed after an epoch's latest checkpoint landed and before its
  best one was linked redoes nothing (`restore_latest` links it), and one killed before the
  latest landed redoes the epoch and saves the same step again. `close` waits for a save in
  flight.
  """

  def __init__(self, workdir: str, keep: int = 3, *, writer: bool = False):
    """`writer`: the run that holds the workdir's lock (asynchronous saves, and it removes a
    dead run's half-made best link); readers (eval, generate, the API) only restore."""
    self.workdir = os.path.abspath(workdir)
    self.writer = writer
    self.latest = ocp.CheckpointManager(
      os.path.join(self.workdir, "checkpoints"), options=_options(keep, asynchronous=writer)
    )
    self.best = ocp.CheckpointManager(os.path.join(self.workdir, "best"), options=_options(1))
    self._in_flight: int | None = None  # the latest step being written
    self._best_step: int | None = None  # to become best/ once its latest save has landed
    # best/ is made of files every process wrote into the shared checkpoints/ folder; one
    # process links it (two would race for the same names).
    self._links = writer and multihost.is_main_process()
    if self._links:
      self._remove_stale_links()

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def has_any(self) -> bool:
    return bool(self.latest.all_steps() or self.best.all_steps())

  def save(self, step: int, state, iterator, meta: RunMeta) -> None:
    """Starts writing the latest checkpoint of `step` and returns (see the module doc)."""
    check_finite(state, step)
    self.settle()
    self._check_space(step, state)
    args = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta.to_json())}
    if iterator is not None:
      args["data"] = grain.checkpoint.CheckpointSave(iterator)
    if step in self.latest.all_steps():
      self.latest.delete(step)
    self.latest.save(step, args=ocp.args.Composite(**args), force=True)
    self._in_flight = step
    faults.point("checkpoint.issued", os.path.join(self.latest.directory, str(step)))

  def discard_after(self, step: int) -> list[int]:
    """Removes the latest checkpoints after `step` (those of a diverged epoch); returns their
    steps."""
    self.settle()
    dropped = [s for s in self.latest.all_steps() if s > step]
    for s in dropped:
      self.latest.delete(s)
    return dropped

  def _check_space(self, step: int, state) -> None:
    """Refuses to start a save that the disk cannot hold (the size of the last landed
    checkpoint, else of the state's arrays): a save failing half-way would fail inside Orbax's
    threads. Another process may still fill the disk during the save; that failure is caught
    as a full disk too (`jaxvae.workdir.is_disk_full`)."""
    landed = self.latest.all_steps()
    size = _folder_bytes(os.path.join(self.latest.directory, str(max(landed)))) if landed else 0
    need_mb = (size or estimated_bytes(state)) * 1.1 / 2**20 + 0.25
    free = workdir_lib.free_mb(os.fspath(self.latest.directory))
    short = free < need_mb
    if jax.process_count() > 1:  # the save is collective: every process refuses it, or none
      short = any(multihost.gather_flags(int(short)))
    if short:
      raise OSError(
        errno.ENOSPC,
        f"{os.strerror(errno.ENOSPC)} for a checkpoint of about {need_mb:.0f} MB (the "
        f"save of step {step} was not started)",
        os.fspath(self.latest.directory),
      )

  def save_best(self, step: int, state, meta: RunMeta) -> None:
    """Makes `step` the best checkpoint: `best/<step>` is linked from the latest checkpoint
    of the same step (which the epoch end saves next) once that has landed."""
    check_finite(state, step)
    del meta  # the latest checkpoint of `step` holds the same run metadata
    self._best_step = step

  def settle(self) -> None:
    """Waits for the save in flight, then links a pending best checkpoint."""
    if self._in_flight is not None:
      self.latest.wait_until_finished()
      self._in_flight = None
      faults.point("checkpoint.latest", os.fspath(self.latest.directory))
    if self._best_step is not None and self._best_step in self.latest.all_steps():
      if self._links:
        self._link_best(self._best_step)
      self._best_step = None

  def _link_best(self, step: int) -> None:
    """`best/<step>` as hard links to `checkpoints/<step>` (a copy where links are not
    possible), built under a temporary name and renamed into place, then older best steps
    removed."""
    src = os.path.join(self.latest.directory, str(step))
    best_dir = os.fspath(self.best.directory)
    tmp = os.path.join(best_dir, f".link-{step}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
      shutil.copytree(src, tmp, copy_function=os.link)
    except OSError:
      shutil.rmtree(tmp, ignore_errors=True)
      shutil.copytree(src, tmp)
    if step in self.best.all_steps():
      self.best.delete(step)
    os.replace(tmp, os.path.join(best_dir, str(step)))
    faults.point("checkpoint.best", os.path.join(best_dir, str(step)))
    self.best.reload()
    for old in self.best.all_steps():
      if old != step:
        self.best.delete(old)

  def _remove_stale_links(self) -> None:
    best_dir = os.fspath(self.best.directory)
    if os.path.isdir(best_dir):
      for name in os.listdir(best_dir):
        if name.startswith(".link-"):
          shutil.rmtree(os.path.join(best_dir, name), ignore_errors=True)

  def restore_latest(self, template, iterator):
    """The newest intact latest checkpoint into `template`'s structure and shardings;
    advances `iterator` in place. Raises CheckpointError when none restores."""

    def args():
      a = {"state": ocp.args.StandardRestore(template), "meta": ocp.args.JsonRestore()}
      if iterator is not None:
        a["data"] = grain.checkpoint.CheckpointRestore(iterator)
      return ocp.args.Composite(**a)

    step, out, damaged = _restore_newest(self.latest, args, "latest")
    if step is None:
      raise errors.CheckpointError(
        f"no checkpoint in '{self.latest.directory}' can be restored (steps "
        f"{', '.join(str(s) for s, _ in damaged)}; step {damaged[0][0]}: {damaged[0][1]}). "
        "If the model's config changed since they were saved, run with the original "
        "config or another --workdir; if they are damaged, start over with --clear"
      )
    if damaged:
      logging.warning(
        "Resuming from step %d: the newer checkpoint(s) at step %s are damaged",
        step,
        ", ".join(str(s) for s, _ in damaged),
      )
    meta = RunMeta.from_json(out["meta"])
    steps = self.latest.all_steps()
    if self._links and meta.best_step in steps and meta.best_step not in self.best.all_steps():
      self._link_best(meta.best_step)  # killed after its latest save landed, before the link
    return out["state"], meta

  def restore_best(self, template):
    """The best checkpoint, or (None, None) when there is none that restores."""
    step, out, _ = _restore_newest(
      self.best,
      lambda: ocp.args.Composite(
        state=ocp.args.StandardRestore(template), meta=ocp.args.JsonRestore()
      ),
      "best",
    )
    if step is None:
      return None, None
    return out["state"], RunMeta.from_json(out["meta"])

  def close(self) -> None:
    """Waits for a save in flight (and links a pending best), then closes the managers."""
    try:
      self.settle()
    finally:
      self.latest.close()
      self.best.close()


def restore(workdir: str, template, which: str = "best"):
  """(state, meta) of `workdir`'s best checkpoint (else of its newest intact latest one), or
  with `which="latest"` of its newest intact latest one, in `template`'s structure and
  shardings: what eval, generate, analyze and the Python API load. CheckpointError when none
  restores."""
  ckpts = Checkpoints(workdir)
  try:
    state = meta = None
    if which == "best":
      state, meta = ckpts.restore_best(template)
    if state is None:
      if ckpts.latest_step() is None:
        raise errors.CheckpointError(
          f"no {'' if which == 'best' else 'latest '}checkpoint in workdir '{workdir}' can be "
          "restored; train first (or start over with --clear)"
        )
      state, meta = ckpts.restore_latest(template, None)
  finally:
    ckpts.close()
  return state, meta


def _merge(template, restored, path=""):
  """(merged, loaded, fresh): `template` with every leaf that `restored` has at the same path
  and shape, and the paths of the leaves taken and of those kept fresh."""
  if isinstance(template, dict):
    out, loaded, fresh = {}, [], []
    for k, v in template.items():
      if isinstance(restored, dict) and k in restored:
        out[k], sub_loaded, sub_fresh = _merge(v, restored[k], f"{path}/{k}")
        loaded += sub_loaded
        fresh += sub_fresh
      else:
        out[k] = v
        fresh += [p for p, _ in _leaf_paths(v, f"{path}/{k}")]
    return out, loaded, fresh
  if hasattr(restored, "shape") and tuple(restored.shape) == tuple(template.shape):
    return jax.device_put(np.asarray(restored, template.dtype), template.sharding), [path], []
  return template, [], [path]


def _leaf_paths(tree, path=""):
  """(path, leaf) of a nested mapping ('/a/b' paths), as `_merge` names them."""
  if isinstance(tree, Mapping):
    for k, v in tree.items():
      yield from _leaf_paths(v, f"{path}/{k}")
  else:
    yield path, tree


def _model_name(workdir: str) -> str:
  """The model name in a workdir's run file, or '?' when it has none."""
  try:
    return workdir_lib.read_run(workdir)["config"]["model"]["name"]
  except (errors.CheckpointError, KeyError, TypeError):
    return "?"


@dataclasses.dataclass
class WeightsTemplate:
  """What `restore_weights` reads a model's shapes from: zeros shaped as its parameters and
  its non-parameter collections."""

  params: Any
  model_state: Any


def weights_template(variable_shapes) -> WeightsTemplate:
  """From the shapes of a model's variables (`jax.eval_shape` of its `init`: {'params': ...,
  other collections}); nothing is computed."""
  shapes = dict(variable_shapes)
  zeros = lambda tree: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), tree)
  return WeightsTemplate(params=zeros(dict(shapes.pop("params"))), model_state=zeros(shapes))


def _report_merge(key, directory, model_name, step, loaded_params, loaded, fresh) -> None:
  """`restore_weights`' verdict on what it took: a ConfigError when no parameter matched (or,
  for a frozen run's key, when any value is missing), else a log line of what was kept."""
  source = _model_name(os.path.dirname(directory))
  if not loaded_params:
    raise errors.ConfigError(
      f"config key '{key}': '{directory}' (model '{source}') shares no parameter "
      f"with this model ('{model_name}'); expected a run of the same architecture"
    )
  if fresh and key != "init_from":
    raise errors.ConfigError(
      f"config key '{key}': '{directory}' (model '{source}', step {step}) lacks "
      f"{len(fresh)} of the model's values ({', '.join(fresh[:3])}); expected a run of the "
      "same architecture"
    )
  if fresh:
    logging.warning(
      "%s %s (model '%s', step %d): loaded %d leaves (%s), kept the "
      "fresh initialization of %d (%s)",
      key,
      directory,
      source,
      step,
      len(loaded),
      ", ".join(loaded[:3]),
      len(fresh),
      ", ".join(fresh[:3]),
    )
  else:
    logging.info(
      "%s %s (model '%s', step %d): loaded all %d leaves", key, directory, source, step, len(loaded)
    )


def restore_weights(
  path: str,
  template,
  model_name: str = "?",
  averaged: dict | None = None,
  with_step: bool = False,
  key: str = "init_from",
):
  """Weights of another run (its best, else its latest checkpoint) for fine-tuning and for
  progressive stages.

  `path` is a workdir or a `checkpoints/` / `best/` folder. Only `params` and the model's
  non-parameter state are taken, leaf by leaf where path and shape agree with `template`
  (a new part, e.g. the VAE encoder after the LM stage, keeps its fresh initialization; a
  warning counts and names both kinds); the caller keeps its fresh optimizer. A source that
  shares no leaf with the model (another architecture) is a ConfigError naming both models.
  `averaged` ({params key: optimizer-state key}, e.g. {'generator': 'ema_gen'}): where the
  checkpoint's optimizer state holds a moving average of that part of the parameters, those
  weights are taken instead (inference with a vocoder's EMA). `with_step`: also return the
  step the weights are of. `key`: the config key that named `path`, in the messages; any other
  than 'init_from' (a frozen run, `training.frozen`) must restore every leaf (ConfigError
  naming the missing ones otherwise: nothing of it may stay at the template's zeros).
  """
  directory, step, restored = _newest_of_run(path, key)
  source_params = dict(restored.get("params", {}))
  for part, opt_key in (averaged or {}).items():
    if opt_key in (restored.get("opt_state") or {}):
      source_params[part] = restored["opt_state"][opt_key]
  params, loaded_params, fresh = _merge(dict(template.params), source_params, "params")
  model_state, loaded_s, fresh_s = _merge(
    dict(template.model_state), restored.get("model_state", {}), "model_state"
  )
  _report_merge(
    key, directory, model_name, step, loaded_params, loaded_params + loaded_s, fresh + fresh_s
  )
  return (params, model_state, step) if with_step else (params, model_state)


def _newest_of_run(path: str, key: str) -> tuple[str, int, dict]:
  """(folder, step, restored tree) of the newest step that restores in `path` (a workdir:
  its best/, else its checkpoints/; or one of those folders); ConfigError naming `key`."""
  path = os.path.abspath(path)
  named = os.path.basename(path) in ("best", "checkpoints")
  candidates = [path] if named else [os.path.join(path, "best"), os.path.join(path, "checkpoints")]
  for directory in candidates:
    if not os.path.isdir(directory):
      continue
    manager = ocp.CheckpointManager(
      directory,
      options=ocp.CheckpointManagerOptions(read_only=True, enable_async_checkpointing=False),
    )
    try:
      step, out, _ = _restore_newest(
        manager, lambda: ocp.args.Composite(state=ocp.args.PyTreeRestore()), key
      )
    finally:
      manager.close()
    if step is not None:
      return directory, int(step), out["state"]
  raise errors.ConfigError(
    f"config key '{key}': no checkpoint that restores under "
    f"'{path}' (expected a jaxvae workdir with best/ or checkpoints/)"
  )
