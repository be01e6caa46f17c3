"""Orbax checkpoints: the last N (state + data position + run metadata) and the best one.

The workdir is the only state: `latest` lets a re-run resume exactly (model, optimizer, step,
RNG, early-stopping bookkeeping and the Grain iterator position); `best` keeps the weights
with the lowest validation loss for eval, generation and fine-tuning.
"""

from __future__ import annotations

import os

import grain
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


def restore_weights(path: str, template):
  """Weights of another run (its best, else its latest checkpoint) for fine-tuning.

  `path` is a workdir or a `checkpoints/` / `best/` folder. Only `params` and the model's
  non-parameter state are taken; the caller keeps its fresh optimizer.
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
      continue
    item = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(partial_restore=True, item={
            "params": template.params, "model_state": template.model_state})))
    manager.close()
    return item["state"]["params"], item["state"]["model_state"]
  raise FileNotFoundError(f"config key 'init_from': no checkpoint under '{path}' "
                          "(expected a jaxvae workdir with best/ or checkpoints/)")
