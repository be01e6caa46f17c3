"""The periodic listening/looking report of a training run, to TensorBoard and
`DIR/reports/epoch_NNNN/`: input-vs-reconstruction spectrograms of the first validation batch
(also kept as `DIR/reconstructions.png`); with `train.report_samples`, spectrograms decoded
from the prior; with `train.report_audio`, Griffin-Lim audio of a reconstruction and a sample;
with `train.report_tsne`, the validation latents' t-SNE coloured by each label. Models that
make waveforms (the waveform VAE, the vocoder) report the mel of the first validation clips
and of their outputs, and with `train.report_audio` the first clip and its output as audio.

`training_hooks` is what `--mode=train` hands the training loop (`epoch_hooks`).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import shutil

import jax
import numpy as np

from jaxvae import errors
from jaxvae import faults
from jaxvae import workdir as workdir_lib
from jaxvae.audio import synthesis
from jaxvae.data import pipeline
from jaxvae.evaluators import plots
from jaxvae.evaluators import vocoding
from jaxvae.evaluators import waveform
from jaxvae.evaluators.latents import encode_all
from jaxvae.sampling import prior
from jaxvae.sampling import vocoder as vocoder_lib
from jaxvae.training import builder


class Report:
  """`run(state, epoch)` writes the report of that epoch; `__call__` does so on the epochs
  `train.image_every_epochs` asks for (every N, and the first).

  The device work (reconstructions, prior samples, latents) runs in the caller's thread and
  ends with host copies, so the state may change right after; the drawing, Griffin-Lim and
  file writing run on one background thread while training goes on (by default on GPU/TPU;
  on the CPU in the caller's thread). One report is drawn at a time; `close()` waits for the
  last one and raises what a report raised."""

  def __init__(self, job, writer, n: int = 8, background: bool | None = None):
    self.job = job
    self.writer = writer
    self.n = n
    if background is None:
      # On an accelerator the host idles while steps run: drawing there is free. On the CPU
      # the steps use every core and drawing holds the GIL: in the caller's thread it costs
      # less (BUILD_NOTES.md, "Wall clock").
      choice = job.config.train.report_thread
      background = jax.default_backend() != "cpu" if choice == "auto" else choice == "yes"
    self._pool = concurrent.futures.ThreadPoolExecutor(1, "report") if background else None
    self._pending: concurrent.futures.Future | None = None
    # generate.vocoder, loaded and checked against the run's features before training starts.
    mel = job.config.data.feature == "mel" and job.config.train.report_audio
    self.vocoder = vocoder_lib.for_config(job.config) if mel else None

  def __call__(self, state, epoch: int) -> None:
    every = self.job.config.train.image_every_epochs
    if every and (epoch % every == 0 or epoch == 1):
      self.run(state, epoch)

  def run(self, state, epoch: int) -> str:
    """Starts the report; returns the path of `DIR/reconstructions.png` it writes ('' for
    token models, whose report is generated MIDI in eval mode)."""
    arrays = self._gather(state, epoch)
    if arrays is None:
      return ""
    self.wait()
    if self._pool is None:
      return self._draw(**arrays)
    self._pending = self._pool.submit(self._draw, **arrays)
    return os.path.join(self.writer.workdir, "reconstructions.png")

  def wait(self) -> None:
    """Waits for the report being drawn; raises its error."""
    pending, self._pending = self._pending, None
    if pending is not None:
      pending.result()

  def close(self) -> None:
    try:
      self.wait()
    finally:
      if self._pool is not None:
        self._pool.shutdown()

  def _gather(self, state, epoch: int) -> dict | None:
    """The report's arrays, on the host (device work only)."""
    job, n = self.job, self.n
    config = job.config
    # Only the examples shown (rounded up to a whole number per device), not a full batch.
    devices = job.mesh.devices.size
    size = min(config.train.batch_size, -(-n // devices) * devices)
    batch = next(pipeline.eval_batches(job.val_examples, size))
    if "waveform" in job.variant.outputs:  # the waveform VAE and the vocoder: audio out
      outputs = job.forward(state, job.put(batch))
      waves = {"x": batch["x"][:n, 0, :], "recon": np.asarray(outputs["wave"])[:n]}
      if not _finite(waves["recon"], epoch):
        return None
      return {"epoch": epoch, "step": int(state.step), **waves, "samples": None, "latent": None}
    if "features" not in job.variant.outputs:  # token models: generated MIDI in eval mode
      return None
    outputs = job.forward(state, job.put(batch))
    out = {
      "epoch": epoch,
      "step": int(state.step),
      "x": batch["x"][:n],
      "recon": np.asarray(outputs["recon"])[:n],
      "samples": None,
      "latent": None,
    }
    has_prior = job.variant.has_prior(config)
    if config.train.report_samples and has_prior:
      out["samples"] = np.asarray(prior.sample(job, state, config, None, min(n, 4), seed=epoch))
    if not _finite({k: v for k, v in out.items() if k != "x"}, epoch):
      return None
    if config.train.report_tsne and has_prior and job.store.label_values:
      out["latent"] = self._latents(state)
    return out

  def _draw(self, epoch, step, x, recon, samples, latent) -> str:
    job, writer, n = self.job, self.writer, self.n
    config = job.config
    out_dir = os.path.join(writer.workdir, "reports", f"epoch_{epoch:04d}")
    os.makedirs(out_dir, exist_ok=True)
    # Drawn once: the epoch's PNG, its pixels for TensorBoard, and a copy as the workdir's
    # latest `reconstructions.png`.
    epoch_png = os.path.join(out_dir, "reconstructions.png")
    audio = {"reconstruction": recon[0]} if config.train.report_audio else {}
    if x.ndim == 2:  # waveforms: drawn as the mel of eval's audio distances, heard as they are
      if audio:
        audio["original"] = x[0]
      mel = vocoding.mel_function(dict(waveform.AUDIO_MEL, sr=int(config.data.sr)))
      length = min(x.shape[1], recon.shape[1])
      x, recon = np.asarray(mel(x[:, :length])), np.asarray(mel(recon[:, :length]))
    image = plots.plot_spectrogram_grid(x, recon, epoch_png, max_items=n, return_array=True)
    writer.image("report/reconstructions", image, step)
    path = os.path.join(writer.workdir, "reconstructions.png")
    with workdir_lib.atomic_path(path) as tmp:
      shutil.copyfile(epoch_png, tmp)
    faults.point("report.written", path)
    if samples is not None:
      writer.image(
        "report/prior_samples",
        plots.plot_spectrograms(
          samples, os.path.join(out_dir, "prior_samples.png"), return_array=True
        ),
        step,
      )
      if config.train.report_audio:
        audio["prior_sample"] = samples[0]
    for name, y in audio.items():
      if config.data.feature == "mel":
        # A preview: the vocoder of generate.vocoder, else Griffin-Lim with the filterbank's
        # pseudo-inverse (--mode=generate uses the NNLS one).
        y = prior.features_to_audio(y, job.store, config, inverse="pinv", vocoder=self.vocoder)
      elif config.data.feature != "waveform":
        continue
      writer.audio(f"report/{name}", y, step, config.data.sr)
      synthesis.write_wav(os.path.join(out_dir, f"{name}.wav"), y, config.data.sr)
    if latent is not None:
      latent, labels = latent
      image = plots.plot_embedding_2d(
        latent,
        labels,
        job.store.label_values,
        os.path.join(out_dir, "latent_tsne.png"),
        method="tsne",
        seed=config.seed,
        return_array=True,
      )
      writer.image("report/latent_tsne", image, step)
    return path

  def _latents(self, state, limit: int = 512):
    """(validation latent means, their labels) for the t-SNE map."""
    job = self.job
    ex = job.val_examples
    indices = ex.indices
    if len(indices) < 32:  # too few validation clips for a readable map: add training clips
      indices = np.concatenate([indices, job.train_examples.indices])
    sub = pipeline.Examples(ex.store, indices[:limit], ex.normalize, ex.lyrics)
    latent = encode_all(job, state, sub)["mu"]
    labels = {k: ex.store.label_array(k)[sub.indices] for k in ex.store.label_values}
    return latent, labels


def _finite(arrays, epoch: int) -> bool:
  """False, with a warning that the epoch has no report, when the model's outputs hold a
  NaN or an infinity (a diverging run)."""
  try:
    builder.require_finite(arrays, "reconstructions")
  except errors.NonFiniteOutputError as e:
    logging.warning("No report for epoch %d: %s", epoch, e)
    return False
  return True


def training_hooks(job, writer) -> list:
  """The epoch-end hooks of a training run: the report, when `train.image_every_epochs` is
  set, on single-process runs (reports decode and plot on one host; multi-host runs use
  --mode=eval/generate afterwards)."""
  if job.config.train.image_every_epochs and jax.process_count() == 1:
    return [Report(job, writer)]
  return []
