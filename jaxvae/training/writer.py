"""Watching a run: tensorboardX scalars, images and hparams, `metrics.jsonl`, the curve PNG.

Values reach this module already on the host: the trainer pulls metrics from the devices only
at log steps and epoch ends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import json
import logging
import math
import os
import sys
import time
from typing import Any

import numpy as np

from jaxvae import errors
from jaxvae import faults
from jaxvae import workdir as workdir_lib
from jaxvae.config import base as config_base
from jaxvae.data import dataset as dataset_lib
from jaxvae.data import tokens as tokens_lib
from jaxvae.errors import ConfigError
from jaxvae.symbolic import tokenizers
from jaxvae.training import figures
from jaxvae.training import trackers
from jaxvae.training.state import RunMeta


def _summary_writer_class():
  """tensorboardX.SummaryWriter, imported with torch hidden when torch is installed but not
  loaded: tensorboardX imports torch (1.4 s per process) only to recognize torch tensors,
  which jaxvae never logs."""
  hide = "torch" not in sys.modules
  if hide:
    sys.modules["torch"] = None  # makes `import torch` raise ImportError, for this import only
  try:
    from tensorboardX import SummaryWriter
  finally:
    if hide:
      del sys.modules["torch"]
  return SummaryWriter


SummaryWriter = _summary_writer_class()
MARKER = workdir_lib.RUN_FILE  # identifies a workdir as ours (used by --clear).
read_run = workdir_lib.read_run
RUN_OUTPUTS = (
  "checkpoints",
  "wandb",  # train.writers' trackers: a cleared run starts a new tracker run
  "mlruns",
  "best",
  "tb",
  "eval",
  "generate",
  "analysis",
  "reports",
  "analysis.md",
  "preprocess.json",
  "metrics.jsonl",
  "summary.json",
  "validate.json",
  "analysis.json",
  "training_curves.png",
  "reconstructions.png",
  "tune",
  "export",
  "download.json",
  MARKER,
)


def mark_workdir(workdir: str, config, store=None) -> None:
  """Records the config and the data (with every bad file and its reason) of a run."""
  info = {"config": json.loads(config.to_json()), "time": time.time()}
  if store is not None:
    bad = store.manifest["bad"]
    info["data"] = {
      "store": store.path,
      "examples": len(store.manifest["examples"]),
      "shape": list(store.shape),
      "bad_files": len(bad),
      "bad": bad,
      **({"sources": store.sources} if store.sources else {}),
      # What `jaxvae.load` needs to use the model without the store: the label vocabularies
      # (class ids), the normalization statistics and the feature settings.
      "label_values": store.label_values,
      "stats": store.manifest.get("stats"),
      "params": store.manifest.get("params"),
      "lyrics_dim": dataset_lib.lyrics_dim(config),
    }
    if store.manifest.get("tokenizer"):  # token ids mean nothing without their vocabulary
      info["data"]["tokenizer"] = store.manifest["tokenizer"]
    if bad:
      logging.warning(
        "%d bad files in the data (%s); listed in %s",
        len(bad),
        ", ".join(sorted({f"{b['reason']}->{b['action']}" for b in bad})),
        os.path.join(workdir, MARKER),
      )
  workdir_lib.write_json(os.path.join(workdir, MARKER), info, fault="run_file", indent=1)


def is_workdir(workdir: str) -> bool:
  return os.path.isfile(os.path.join(workdir, MARKER))


def model_changes(workdir: str, config, shape: Sequence[int] | None = None) -> list[str]:
  """What changed against `workdir`'s run file that decides the parameters' shapes: the
  `model.*` keys whose value in `config` differs ("model.key: saved -> now", a key the run
  file lacks shows as absent) and, when the features' `shape` differs from the saved one,
  that shape and the `data.*` keys that differ; [] without a readable run file. Read before a
  run rewrites it, to explain a checkpoint that no longer fits the model."""
  try:
    run = read_run(workdir)
    saved_config = run["config"]
  except (errors.CheckpointError, KeyError, TypeError):
    return []
  if not isinstance(saved_config, dict):
    return []
  now = json.loads(json.dumps(config.to_dict(), default=str))  # as the run file has it
  changes = _section_changes("model", saved_config.get("model"), now["model"])
  data = run.get("data")
  saved_shape = data.get("shape") if isinstance(data, dict) else None
  if shape is not None and isinstance(saved_shape, list) and saved_shape != list(shape):
    changes.append(f"the features' shape: {list(saved_shape)} -> {list(shape)}")
    changes += _section_changes("data", saved_config.get("data"), now["data"])
  return changes


def _section_changes(section: str, saved, now: dict) -> list[str]:
  if not isinstance(saved, dict):
    return []
  missing = object()
  shown = lambda tree, key: repr(tree[key]) if key in tree else "absent"
  return [
    f"{section}.{key}: {shown(saved, key)} -> {shown(now, key)}"
    for key in sorted(set(saved) | set(now))
    if saved.get(key, missing) != now.get(key, missing)
  ]


def run_data(workdir: str) -> dict:
  """The `data` record of a workdir's run file ({} when it has none or cannot be read); a
  checkpoint folder inside a workdir (`DIR/checkpoints/7`, `DIR/best`) reads its workdir's."""
  workdir = os.path.normpath(workdir)
  for up in (workdir, os.path.dirname(workdir), os.path.dirname(os.path.dirname(workdir))):
    if is_workdir(up):
      workdir = up
      break
  try:
    return read_run(workdir).get("data") or {}
  except errors.CheckpointError:
    return {}


def run_tokenizer(workdir: str):
  """The tokenizer a MIDI run in `workdir` was trained with (the events for runs from before
  tokenizers were chosen)."""
  return tokenizers.make(tokens_lib.tokenizer_record(run_data(workdir)))


def check_tokenizer(directory: str, store, key: str) -> None:
  """ConfigError when the run in `directory` was trained on another tokenization than the
  token `store`'s: a checkpoint's ids mean nothing under another vocabulary."""
  data = run_data(directory)
  if not isinstance(store, tokens_lib.TokenStore) or "params" not in data:
    return
  if tokens_lib.tokenizer_fingerprint(data) == tokens_lib.tokenizer_fingerprint(store.manifest):
    return
  theirs = tokenizers.make(tokens_lib.tokenizer_record(data))
  raise ConfigError(
    f"{key} '{directory}' was trained on the tokenizer {theirs.describe()}, "
    f"but the data now gives {store.tokenizer.describe()}: set data.midi.* (tokenizer, "
    "vocab_size, the files of data.root) as that run had them, or start a new workdir"
  )


class Writer:
  """TensorBoard event files plus a JSON-lines copy of every logged scalar."""

  def __init__(self, workdir: str, config, purge_step: int | None = None):
    """`purge_step`: a resumed run's first step; TensorBoard hides what an earlier attempt
    logged from that step on (those steps are redone)."""
    self.workdir = workdir
    self.tb = SummaryWriter(os.path.join(workdir, "tb"), purge_step=purge_step)
    self.jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
    self.config = config
    self.trackers = trackers.open_trackers(workdir, config, resuming=purge_step is not None)

  def _line(self, row: dict) -> None:
    """One metrics.jsonl row. A kill may tear it (shown by the fault point between its
    halves); `workdir.repair_metrics` drops torn rows when the run resumes."""
    # Strict JSON: a non-finite value (a broken model's validation loss) is written as null.
    row = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}
    text = json.dumps(row, allow_nan=False) + "\n"
    half = len(text) // 2
    self.jsonl.write(text[:half])
    self.jsonl.flush()
    faults.point("metrics.line", self.jsonl.name)
    self.jsonl.write(text[half:])
    self.jsonl.flush()

  def scalars(self, step: int, values: dict[str, float]) -> None:
    finite = {k: v for k, v in values.items() if math.isfinite(v)}
    for k, v in finite.items():
      self.tb.add_scalar(k, v, step)
    for tracker in self.trackers:
      tracker.scalars(step, finite)
    self._line({"step": step, **values})

  def epoch(self, record: dict) -> None:
    step = record["step"]
    finite = {
      f"epoch/{k}": v
      for k, v in record.items()
      if k not in ("epoch", "step") and isinstance(v, (int, float)) and math.isfinite(v)
    }
    for k, v in finite.items():
      self.tb.add_scalar(k, v, step)
    for tracker in self.trackers:
      tracker.scalars(step, finite)
    self._line({"kind": "epoch", **record})

  def image(self, tag: str, image: np.ndarray, step: int) -> None:
    self.tb.add_image(tag, image, step, dataformats="HWC")
    for tracker in self.trackers:
      tracker.image(tag, image, step)

  def histogram(self, tag: str, counts: np.ndarray, step: int) -> None:
    """Weights over integer bins as a TensorBoard histogram: codebook usage counts per code,
    the KL per latent dimension."""
    counts = np.asarray(counts, np.float64)
    bins = np.arange(len(counts), dtype=np.float64)
    self.tb.add_histogram_raw(
      tag,
      min=0.0,
      max=float(len(counts) - 1),
      num=float(counts.sum()),
      sum=float((bins * counts).sum()),
      sum_squares=float((bins**2 * counts).sum()),
      bucket_limits=(bins + 0.5).tolist(),
      bucket_counts=counts.tolist(),
      global_step=step,
    )
    self._line({"step": step, tag: counts.tolist()})

  def audio(self, tag: str, y: np.ndarray, step: int, sr: int) -> None:
    self.tb.add_audio(tag, np.clip(np.asarray(y, np.float32), -1.0, 1.0), step, sample_rate=sr)
    for tracker in self.trackers:
      tracker.audio(tag, y, step, sr)

  def close(self) -> None:
    self.tb.flush()
    self.tb.close()
    self.jsonl.close()
    for tracker in self.trackers:
      tracker.close()


class NullWriter(Writer):
  """What processes other than 0 of a multi-host run log to: nothing."""

  def __init__(self, workdir: str, config, purge_step=None):  # pylint: disable=super-init-not-called
    self.workdir, self.config = workdir, config

  def scalars(self, step, values):
    pass

  def epoch(self, record):
    pass

  def image(self, tag, image, step):
    pass

  def histogram(self, tag, counts, step):
    pass

  def audio(self, tag, y, step, sr):
    pass

  def close(self):
    pass


def _metric_series(history: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, tuple]]:
  """{metric: {split: (xs, ys)}} from rows like {"epoch": 1, "train/loss": .., "val/loss": ..}."""
  xkey = next((k for k in ("epoch", "step") if any(k in row for row in history)), None)
  series: dict[str, dict[str, tuple[list, list]]] = {}
  for i, row in enumerate(history):
    x = row.get(xkey, i) if xkey else i
    for key, value in row.items():
      if key in ("epoch", "step"):
        continue
      try:
        value = float(value)
      except (TypeError, ValueError):
        continue  # strings, arrays with more than one value: not a curve
      split, _, metric = key.rpartition("/")
      xs, ys = series.setdefault(metric, {}).setdefault(split, ([], []))
      xs.append(x)
      ys.append(value)
  return series


def plot_training_curves(
  history: Sequence[Mapping[str, Any]],
  path: str | None,
  keys: Sequence[str] | None = None,
  *,
  return_array: bool = False,
):
  """One subplot per metric name, its train / val / ... curves on the same axes.

  `keys` picks metrics by name ("loss", or "train/loss" meaning "loss"); requested keys that
  never occur are logged and skipped, and rows that lack a metric are simply not plotted.
  """
  series = _metric_series(history)
  names = (
    sorted(series) if keys is None else list(dict.fromkeys(k.rpartition("/")[2] for k in keys))
  )
  missing = [k for k in names if k not in series]
  if missing:
    logging.warning("plot_training_curves: no values for %s in the history", missing)
  names = [k for k in names if k in series]
  cols = min(3, max(1, len(names)))
  rows = max(1, -(-len(names) // cols))
  fig = figures.new_figure(4.5 * cols, 3.2 * rows)
  if not names:
    ax = fig.add_subplot(1, 1, 1)
    ax.text(0.5, 0.5, "no metrics to plot", ha="center", va="center")
    ax.set_axis_off()
  for i, name in enumerate(names):
    ax = fig.add_subplot(rows, cols, i + 1)
    for split, (xs, ys) in sorted(series[name].items()):
      ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=split or name)
    ax.set_title(name)
    ax.set_xlabel("epoch" if any("epoch" in r for r in history) else "step")
    ax.legend(fontsize="small")
  # Fixed margins for titles and labels: tight_layout would draw the figure once more.
  height = 3.2 * rows
  fig.subplots_adjust(
    left=0.5 / (4.5 * cols) + 0.03,
    right=0.98,
    bottom=0.5 / height,
    top=1 - 0.35 / height,
    wspace=0.3,
    hspace=0.75 / 3.2 + 0.25,
  )
  return figures.finish(fig, path, return_array)


def finish(
  workdir: str,
  config,
  meta: RunMeta,
  resources: dict | None = None,
  timing: Callable[[], dict] | None = None,
) -> None:
  """The end-of-run artifacts: training-curve PNG, hparams with the final metrics, and what
  the run used (`resources`: `training.resources.Monitor.summary()`; `timing()`: where the
  wall time went, `training.timing.Phases.summary`, read last) in the log and the run file."""
  _final_hparams(workdir, config, meta)
  extra = _end_record(meta, resources, timing() if timing is not None else None)
  if extra:
    path = os.path.join(workdir, MARKER)
    workdir_lib.write_json(path, dict(read_run(workdir), **extra), fault="run_file", indent=1)


def _final_hparams(workdir: str, config, meta: RunMeta) -> None:
  """The training curves' PNG, then the config with the best validation value and the epoch
  count as hparams in TensorBoard and every tracker (which are closed as finished)."""
  history = meta.history
  if history:
    per_epoch = ("seconds", "samples_per_s", "eval_seconds", "train/nonfinite_steps")
    curves = [{k: v for k, v in row.items() if k not in per_epoch} for row in history]
    plot_training_curves(curves, os.path.join(workdir, "training_curves.png"))
  faults.point("finish", os.path.join(workdir, "training_curves.png"))
  tb = SummaryWriter(os.path.join(workdir, "tb"))
  best = float(meta.best_val)
  name = getattr(meta, "best_metric", "loss")
  final = {f"hparam/best_val_{name}": best} if math.isfinite(best) else {}
  if history:
    final["hparam/epochs"] = float(history[-1]["epoch"])
  try:
    tb.add_hparams(config_base.flat(config), final, name="hparams")
  finally:
    tb.close()
  for tracker in trackers.open_trackers(workdir, config):
    tracker.hparams(config_base.flat(config), final)
    tracker.close(finished=True)
  logging.info("Run finished: best val %s %.5g at step %d", name, meta.best_val, meta.best_step)


def _end_record(meta: RunMeta, resources: dict | None, timing: dict | None) -> dict:
  """What the run file gains at the end ('stopped', 'resources', 'timing', those known),
  each also logged in one line."""
  extra = {}
  if meta.stop_reason:
    extra["stopped"] = {
      "reason": meta.stop_reason,
      "step": meta.stop_step,
      "epochs": meta.epoch,
      "data_epochs": meta.data_epochs,
      "best_step": meta.best_step,
    }
    logging.info(
      "Training ended (%s) at step %d: %d epochs, %.3g passes over the training split",
      meta.stop_reason,
      meta.stop_step,
      meta.epoch,
      meta.data_epochs,
    )
  if resources:
    logging.info("Resources: %s", ", ".join(f"{k} {v}" for k, v in resources.items()))
    extra["resources"] = resources
  if timing is not None:
    extra["timing"] = timing
    logging.info(
      "Wall time %.1f s: %s",
      timing["total_s"],
      ", ".join(
        f"{k} {timing[k + '_s']:.1f} s ({100 * timing[k + '_share']:.0f} %)"
        for k in ("data", "setup", "compile", "train_steps", "evaluation", "checkpoints", "reports")
      ),
    )
  return extra
