"""The evaluators a mode runs, chosen from the config (big_vision's way: the config names what
to measure, the mode only runs it)."""

from __future__ import annotations

from jaxvae.evaluators.latents import Latents
from jaxvae.evaluators.music import MusicStatistics


def for_eval(job, out_dir: str):
  """`--mode=eval`'s evaluator for `job`'s data: token statistics for MIDI, latent clustering
  for audio. Each has `run(state) -> metrics` (the content of `metrics.json`),
  `scalars(metrics)` for TensorBoard and `summary(metrics)` to print."""
  if job.variant.data_kind == "midi":
    return MusicStatistics(job, out_dir)
  return Latents(job, out_dir)
