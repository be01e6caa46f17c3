"""Watching a run: tensorboardX scalars, images and hparams, `metrics.jsonl`, the curve PNG.

Values reach this module already on the host: the trainer pulls metrics from the devices only
at log steps and epoch ends.
"""

from __future__ import annotations

import json
import logging
import os
import time

import numpy as np
from tensorboardX import SummaryWriter

MARKER = "jaxvae_run.json"  # identifies a workdir as ours (used by --clear).
RUN_OUTPUTS = ("checkpoints", "best", "tb", "eval", "generate", "analysis", "plots",
               "metrics.jsonl", "summary.json", "validate.json", "analysis.json",
               "training_curves.png", "reconstructions.png", "tune", MARKER)


def mark_workdir(workdir: str, config, store=None) -> None:
  """Records the config and the data (with every bad file and its reason) of a run."""
  info = {"config": json.loads(config.to_json()), "time": time.time()}
  if store is not None:
    bad = store.manifest["bad"]
    info["data"] = {"store": store.path, "examples": len(store.manifest["examples"]),
                    "shape": list(store.shape), "bad_files": len(bad), "bad": bad}
    if bad:
      logging.warning("%d bad files in the data (%s); listed in %s", len(bad),
                      ", ".join(sorted({f"{b['reason']}->{b['action']}" for b in bad})),
                      os.path.join(workdir, MARKER))
  with open(os.path.join(workdir, MARKER), "w", encoding="utf-8") as f:
    json.dump(info, f, indent=1, ensure_ascii=False)


def is_workdir(workdir: str) -> bool:
  return os.path.isfile(os.path.join(workdir, MARKER))


class Writer:
  """TensorBoard event files plus a JSON-lines copy of every logged scalar."""

  def __init__(self, workdir: str, config):
    self.workdir = workdir
    self.tb = SummaryWriter(os.path.join(workdir, "tb"))
    self.jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
    self.config = config

  def scalars(self, step: int, values: dict[str, float]) -> None:
    for k, v in values.items():
      self.tb.add_scalar(k, v, step)
    self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
    self.jsonl.flush()

  def epoch(self, record: dict) -> None:
    step = record["step"]
    for k, v in record.items():
      if k not in ("epoch", "step"):
        self.tb.add_scalar(f"epoch/{k}", v, step)
    self.jsonl.write(json.dumps({"kind": "epoch", **record}) + "\n")
    self.jsonl.flush()

  def image(self, tag: str, image: np.ndarray, step: int) -> None:
    self.tb.add_image(tag, image, step, dataformats="HWC")

  def histogram(self, tag: str, counts: np.ndarray, step: int) -> None:
    """A histogram of integer bins (e.g. codebook usage) as TensorBoard shows it."""
    counts = np.asarray(counts, np.float64)
    bins = np.arange(len(counts), dtype=np.float64)
    self.tb.add_histogram_raw(tag, min=0.0, max=float(len(counts) - 1), num=float(counts.sum()),
                              sum=float((bins * counts).sum()),
                              sum_squares=float((bins**2 * counts).sum()),
                              bucket_limits=(bins + 0.5).tolist(),
                              bucket_counts=counts.tolist(), global_step=step)
    self.jsonl.write(json.dumps({"step": step, tag: counts.tolist()}) + "\n")

  def audio(self, tag: str, y: np.ndarray, step: int, sr: int) -> None:
    self.tb.add_audio(tag, y[None], step, sample_rate=sr)

  def close(self) -> None:
    self.tb.flush()
    self.tb.close()
    self.jsonl.close()


def reconstructions(run, state, writer: Writer, step: int, epoch: int, n: int = 8) -> str:
  """Input-vs-reconstruction spectrograms of the first validation batch, to TB and PNG."""
  from jaxvae import analysis
  from jaxvae.data import pipeline
  batch = next(pipeline.eval_batches(run.val_examples, run.config.train.batch_size))
  outputs = run.forward(state, run.put(batch))
  recon = np.asarray(outputs["recon"])[:n]
  path = os.path.join(writer.workdir, "reconstructions.png")
  image = analysis.plot_spectrogram_grid(batch["x"][:n], recon, path, max_items=n,
                                         return_array=True)
  writer.image("reconstructions", image, step)
  return path


def _flat_config(config, prefix="") -> dict:
  out = {}
  for k, v in config.items():
    if hasattr(v, "items"):
      out |= _flat_config(v, f"{prefix}{k}.")
    elif isinstance(v, (int, float, str, bool)):
      out[f"{prefix}{k}"] = v
  return out


def finish(workdir: str, config, meta: dict) -> None:
  """The end-of-run artifacts: training-curve PNG and hparams with the final metrics."""
  from jaxvae import analysis
  history = meta.get("history", [])
  if history:
    analysis.plot_training_curves(history, os.path.join(workdir, "training_curves.png"))
  tb = SummaryWriter(os.path.join(workdir, "tb"))
  final = {"hparam/best_val_loss": float(meta.get("best_val", float("nan")))}
  if history:
    final["hparam/epochs"] = float(history[-1]["epoch"])
  try:
    tb.add_hparams(_flat_config(config), final, name="hparams")
  finally:
    tb.close()
  logging.info("Run finished: best validation loss %.5g at step %d", meta["best_val"],
               meta["best_step"])
