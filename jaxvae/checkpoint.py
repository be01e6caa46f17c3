"""Orbax checkpoints: the last N (state + data position + run metadata) and the best one.

The workdir is the only state: `latest` lets a re-run resume exactly (model, optimizer, step,
RNG, early-stopping bookkeeping and the Grain iterator position); `best` keeps the weights
with the lowest validation loss for eval, generation and fine-tuning.
"""

from __future__ import annotations

import logging
import os

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp


def _options(keep: int) -> ocp.CheckpointManagerOptions:
  # Synchronous saves: a save has landed (atomically) before training continues, so a kill
  # at any moment leaves either the previous or the new checkpoint, never half of one.
  return ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                      enable_async_checkpointing=False)


class Checkpoints:
  """The `checkpoints/` (last N) and `best/` (1) managers of a workdir."""

  def __init__(self, workdir: str, keep: int = 3):
    self.workdir = os.path.abspath(workdir)
    self.latest = ocp.CheckpointManager(os.path.join(self.workdir, "checkpoints"),
                                        options=_options(keep))
    self.best = ocp.CheckpointManager(os.path.join(self.workdir, "best"), options=_options(1))

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def save(self, step: int, state, iterator, meta: dict) -> None:
    args = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
    if iterator is not None:
      args["data"] = grain.checkpoint.CheckpointSave(iterator)
    self.latest.save(step, args=ocp.args.Composite(**args), force=True)
    self.latest.wait_until_finished()

  def save_best(self, step: int, state, meta: dict) -> None:
    self.best.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
    self.best.wait_until_finished()

  def restore_latest(self, template, iterator):
    """Restores into `template`'s structure and shardings; advances `iterator` in place."""
    step = self.latest.latest_step()
    args = {"state": ocp.args.StandardRestore(template), "meta": ocp.args.JsonRestore()}
    if iterator is not None:
      args["data"] = grain.checkpoint.CheckpointRestore(iterator)
    out = self.latest.restore(step, args=ocp.args.Composite(**args))
    return out["state"], out["meta"]

  def restore_best(self, template):
    step = self.best.latest_step()
    if step is None:
      return None, None
    out = self.best.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(template), meta=ocp.args.JsonRestore()))
    return out["state"], out["meta"]

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def _merge(template, restored, path=""):
  """`template` with every leaf that `restored` has at the same path and shape."""
  if isinstance(template, dict):
    out, missing = {}, []
    for k, v in template.items():
      if isinstance(restored, dict) and k in restored:
        out[k], sub_missing = _merge(v, restored[k], f"{path}/{k}")
        missing += sub_missing
      else:
        out[k] = v
        missing.append(f"{path}/{k}")
    return out, missing
  if hasattr(restored, "shape") and tuple(restored.shape) == tuple(template.shape):
    return jax.device_put(np.asarray(restored, template.dtype), template.sharding), []
  return template, [path]


def restore_weights(path: str, template):
  """Weights of another run (its best, else its latest checkpoint) for fine-tuning and for
  progressive stages.

  `path` is a workdir or a `checkpoints/` / `best/` folder. Only `params` and the model's
  non-parameter state are taken, leaf by leaf where path and shape agree with `template`
  (a new part, e.g. the VAE encoder after the LM stage, keeps its fresh initialization and
  is logged); the caller keeps its fresh optimizer.
  """
  path = os.path.abspath(path)
  candidates = [path] if os.path.basename(path) in ("best", "checkpoints") else [
      os.path.join(path, "best"), os.path.join(path, "checkpoints")]
  for directory in candidates:
    if not os.path.isdir(directory):
      continue
    manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
        read_only=True, enable_async_checkpointing=False))
    step = manager.latest_step()
    if step is None:
      manager.close()
      continue
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore()))["state"]
    manager.close()
    params, missing = _merge(dict(template.params), restored.get("params", {}), "params")
    model_state, missing_state = _merge(dict(template.model_state),
                                        restored.get("model_state", {}), "model_state")
    if missing or missing_state:
      logging.info("init_from %s: kept the fresh initialization of %d leaves (e.g. %s)",
                   directory, len(missing) + len(missing_state), (missing + missing_state)[0])
    return params, model_state
  raise FileNotFoundError(f"config key 'init_from': no checkpoint under '{path}' "
                          "(expected a jaxvae workdir with best/ or checkpoints/)")
