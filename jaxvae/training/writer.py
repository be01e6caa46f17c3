"""Watching a run: tensorboardX scalars, images and hparams, `metrics.jsonl`, the curve PNG.

Values reach this module already on the host: the trainer pulls metrics from the devices only
at log steps and epoch ends.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time

import numpy as np

from jaxvae import faults
from jaxvae import workdir as workdir_lib

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
MARKER = "jaxvae_run.json"  # identifies a workdir as ours (used by --clear).
RUN_OUTPUTS = ("checkpoints", "best", "tb", "eval", "generate", "analysis", "reports",
               "analysis.md", "preprocess.json", "metrics.jsonl", "summary.json", "validate.json", "analysis.json",
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
  workdir_lib.write_json(os.path.join(workdir, MARKER), info, fault="run_file", indent=1)


def is_workdir(workdir: str) -> bool:
  return os.path.isfile(os.path.join(workdir, MARKER))


class Writer:
  """TensorBoard event files plus a JSON-lines copy of every logged scalar."""

  def __init__(self, workdir: str, config, purge_step: int | None = None):
    """`purge_step`: a resumed run's first step; TensorBoard hides what an earlier attempt
    logged from that step on (those steps are redone)."""
    self.workdir = workdir
    self.tb = SummaryWriter(os.path.join(workdir, "tb"), purge_step=purge_step)
    self.jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
    self.config = config

  def _line(self, row: dict) -> None:
    """One metrics.jsonl row. A kill may tear it (shown by the fault point between its
    halves); `workdir.repair_metrics` drops torn rows when the run resumes."""
    # Strict JSON: a non-finite value (a broken model's validation loss) is written as null.
    row = {k: None if isinstance(v, float) and not math.isfinite(v) else v
           for k, v in row.items()}
    text = json.dumps(row, allow_nan=False) + "\n"
    half = len(text) // 2
    self.jsonl.write(text[:half])
    self.jsonl.flush()
    faults.point("metrics.line")
    self.jsonl.write(text[half:])
    self.jsonl.flush()

  def scalars(self, step: int, values: dict[str, float]) -> None:
    for k, v in values.items():
      if math.isfinite(v):
        self.tb.add_scalar(k, v, step)
    self._line({"step": step, **values})

  def epoch(self, record: dict) -> None:
    step = record["step"]
    for k, v in record.items():
      if k not in ("epoch", "step") and isinstance(v, (int, float)) and math.isfinite(v):
        self.tb.add_scalar(f"epoch/{k}", v, step)
    self._line({"kind": "epoch", **record})

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
    self._line({"step": step, tag: counts.tolist()})

  def audio(self, tag: str, y: np.ndarray, step: int, sr: int) -> None:
    self.tb.add_audio(tag, np.clip(np.asarray(y, np.float32), -1.0, 1.0), step, sample_rate=sr)

  def close(self) -> None:
    self.tb.flush()
    self.tb.close()
    self.jsonl.close()


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


def report(run, state, writer: Writer, step: int, epoch: int, n: int = 8) -> str:
  """The periodic listening/looking report, to TensorBoard and `DIR/reports/epoch_NNNN/`.

  Input-vs-reconstruction spectrograms of the first validation batch (also kept as
  `DIR/reconstructions.png`); with `train.report_samples`, spectrograms decoded from the prior;
  with `train.report_audio`, Griffin-Lim audio of a reconstruction and a sample; with
  `train.report_tsne`, the validation latents' t-SNE coloured by each label.
  """
  from jaxvae.evaluators import clustering as analysis
  from jaxvae.modes import generate
  from jaxvae.data import pipeline
  config = run.config
  out_dir = os.path.join(writer.workdir, "reports", f"epoch_{epoch:04d}")
  os.makedirs(out_dir, exist_ok=True)
  batch = next(pipeline.eval_batches(run.val_examples, config.train.batch_size))
  outputs = run.forward(state, run.put(batch))
  if "recon" not in outputs:  # token models: their report is generated MIDI (eval mode)
    return ""
  recon = np.asarray(outputs["recon"])[:n]
  image = analysis.plot_spectrogram_grid(batch["x"][:n], recon, None, max_items=n,
                                         return_array=True)
  writer.image("report/reconstructions", image, step)
  path = os.path.join(writer.workdir, "reconstructions.png")
  analysis.plot_spectrogram_grid(batch["x"][:n], recon, path, max_items=n)
  faults.point("report.written")
  analysis.plot_spectrogram_grid(batch["x"][:n], recon,
                                 os.path.join(out_dir, "reconstructions.png"), max_items=n)
  audio = {"reconstruction": recon[0]} if config.train.report_audio else {}
  if config.train.report_samples and "mu" in outputs:
    samples = generate.sample(run, state, config, None, min(n, 4), seed=epoch)
    writer.image("report/prior_samples", analysis.plot_spectrograms(
        samples, os.path.join(out_dir, "prior_samples.png"), return_array=True), step)
    if config.train.report_audio:
      audio["prior_sample"] = samples[0]
  if config.data.feature == "mel":
    for name, spec in audio.items():
      y = generate.features_to_audio(spec, run.store, config)
      writer.audio(f"report/{name}", y, step, config.data.sr)
      from jaxvae.audio import features
      features.write_wav(os.path.join(out_dir, f"{name}.wav"), y, config.data.sr)
  if config.train.report_tsne and "mu" in outputs and run.store.label_values:
    _latent_plot(run, state, writer, step, out_dir)
  return path


def _latent_plot(run, state, writer, step, out_dir, limit: int = 512) -> None:
  from jaxvae.evaluators import clustering as analysis
  from jaxvae.modes import evaluate
  from jaxvae.data import pipeline
  ex = run.val_examples
  indices = ex.indices
  if len(indices) < 32:  # too few validation clips for a readable map: add training clips
    indices = np.concatenate([indices, run.train_examples.indices])
  sub = pipeline.Examples(ex.store, indices[:limit], ex.normalize, ex.lyrics)
  latent = evaluate.encode_all(run, state, sub)["mu"]
  labels = {k: ex.store.label_array(k)[sub.indices] for k in ex.store.label_values}
  image = analysis.plot_embedding_2d(latent, labels, ex.store.label_values,
                                     os.path.join(out_dir, "latent_tsne.png"), method="tsne",
                                     seed=run.config.seed, return_array=True)
  writer.image("report/latent_tsne", image, step)


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
  from jaxvae.evaluators import clustering as analysis
  history = meta.get("history", [])
  if history:
    timing = ("seconds", "samples_per_s", "eval_seconds", "train/nonfinite_steps")
    curves = [{k: v for k, v in row.items() if k not in timing} for row in history]
    analysis.plot_training_curves(curves, os.path.join(workdir, "training_curves.png"))
  faults.point("finish")
  tb = SummaryWriter(os.path.join(workdir, "tb"))
  best = float(meta.get("best_val", float("nan")))
  final = {"hparam/best_val_loss": best} if math.isfinite(best) else {}
  if history:
    final["hparam/epochs"] = float(history[-1]["epoch"])
  try:
    tb.add_hparams(_flat_config(config), final, name="hparams")
  finally:
    tb.close()
  logging.info("Run finished: best validation loss %.5g at step %d", meta["best_val"],
               meta["best_step"])
