"""The periodic listening/looking report of a training run, to TensorBoard and
`DIR/reports/epoch_NNNN/`: input-vs-reconstruction spectrograms of the first validation batch
(also kept as `DIR/reconstructions.png`); with `train.report_samples`, spectrograms decoded
from the prior; with `train.report_audio`, Griffin-Lim audio of a reconstruction and a sample;
with `train.report_tsne`, the validation latents' t-SNE coloured by each label.

`training_hooks` is what `--mode=train` hands the training loop (`epoch_hooks`).
"""

from __future__ import annotations

import os
import shutil

import jax
import numpy as np

from jaxvae import faults
from jaxvae import workdir as workdir_lib
from jaxvae.audio import features
from jaxvae.data import pipeline
from jaxvae.evaluators import plots
from jaxvae.evaluators.latents import encode_all
from jaxvae.sampling import prior


class Report:
  """`run(state, epoch)` writes the report of that epoch; `__call__` does so on the epochs
  `train.image_every_epochs` asks for (every N, and the first)."""

  def __init__(self, job, writer, n: int = 8):
    self.job = job  # a `training.builder.Run`
    self.writer = writer
    self.n = n

  def __call__(self, state, epoch: int) -> None:
    every = self.job.config.train.image_every_epochs
    if every and (epoch % every == 0 or epoch == 1):
      self.run(state, epoch)

  def run(self, state, epoch: int) -> str:
    """Writes the report; returns the path of `DIR/reconstructions.png` ('' for token
    models, whose report is generated MIDI in eval mode)."""
    run, writer, n = self.job, self.writer, self.n
    config = run.config
    step = int(state.step)
    out_dir = os.path.join(writer.workdir, "reports", f"epoch_{epoch:04d}")
    os.makedirs(out_dir, exist_ok=True)
    batch = next(pipeline.eval_batches(run.val_examples, config.train.batch_size))
    outputs = run.forward(state, run.put(batch))
    if "recon" not in outputs:
      return ""
    recon = np.asarray(outputs["recon"])[:n]
    # Drawn once: the epoch's PNG, its pixels for TensorBoard, and a copy as the workdir's
    # latest `reconstructions.png`.
    epoch_png = os.path.join(out_dir, "reconstructions.png")
    image = plots.plot_spectrogram_grid(
      batch["x"][:n], recon, epoch_png, max_items=n, return_array=True
    )
    writer.image("report/reconstructions", image, step)
    path = os.path.join(writer.workdir, "reconstructions.png")
    with workdir_lib.atomic_path(path) as tmp:
      shutil.copyfile(epoch_png, tmp)
    faults.point("report.written")
    audio = {"reconstruction": recon[0]} if config.train.report_audio else {}
    if config.train.report_samples and "mu" in outputs:
      samples = prior.sample(run, state, config, None, min(n, 4), seed=epoch)
      writer.image(
        "report/prior_samples",
        plots.plot_spectrograms(
          samples, os.path.join(out_dir, "prior_samples.png"), return_array=True
        ),
        step,
      )
      if config.train.report_audio:
        audio["prior_sample"] = samples[0]
    if config.data.feature == "mel":
      for name, spec in audio.items():
        y = prior.features_to_audio(spec, run.store, config)
        writer.audio(f"report/{name}", y, step, config.data.sr)
        features.write_wav(os.path.join(out_dir, f"{name}.wav"), y, config.data.sr)
    if config.train.report_tsne and "mu" in outputs and run.store.label_values:
      self._latent_plot(state, step, out_dir)
    return path

  def _latent_plot(self, state, step, out_dir, limit: int = 512) -> None:
    run = self.job
    ex = run.val_examples
    indices = ex.indices
    if len(indices) < 32:  # too few validation clips for a readable map: add training clips
      indices = np.concatenate([indices, run.train_examples.indices])
    sub = pipeline.Examples(ex.store, indices[:limit], ex.normalize, ex.lyrics)
    latent = encode_all(run, state, sub)["mu"]
    labels = {k: ex.store.label_array(k)[sub.indices] for k in ex.store.label_values}
    image = plots.plot_embedding_2d(
      latent,
      labels,
      ex.store.label_values,
      os.path.join(out_dir, "latent_tsne.png"),
      method="tsne",
      seed=run.config.seed,
      return_array=True,
    )
    self.writer.image("report/latent_tsne", image, step)


def training_hooks(job, writer) -> list:
  """The epoch-end hooks of a training run: the report, when `train.image_every_epochs` is
  set, on single-process runs (reports decode and plot on one host; multi-host runs use
  --mode=eval/generate afterwards)."""
  if job.config.train.image_every_epochs and jax.process_count() == 1:
    return [Report(job, writer)]
  return []
