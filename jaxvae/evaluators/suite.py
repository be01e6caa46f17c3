"""The evaluators a mode runs, chosen from the config (big_vision's way: the config names what
to measure, the mode only runs it)."""

from __future__ import annotations

from jaxvae.errors import ConfigError
from jaxvae.evaluators import latents
from jaxvae.evaluators.latents import Latents
from jaxvae.evaluators.music import MusicStatistics
from jaxvae.evaluators.vocoding import VocoderQuality
from jaxvae.evaluators.waveform import WaveQuality


def for_eval(job, out_dir: str):
  """`--mode=eval`'s evaluator for `job`'s data: token statistics for MIDI, latent clustering
  for audio, audio quality and speed beside Griffin-Lim for a vocoder. Each has
  `run(state) -> metrics` (the content of `metrics.json`), `scalars(metrics)` for TensorBoard
  and `summary(metrics)` to print."""
  if job.variant.data_kind == "midi":
    return MusicStatistics(job, out_dir)
  source = job.variant.waveform_from(job.config)
  if source == "latent":  # the waveform VAE or codec
    return WaveQuality(job, out_dir)
  if source == "features":
    return VocoderQuality(job, out_dir)
  unknown = [n for n in latents.names(job) if n not in latents.EVALUATORS]
  if unknown:
    raise ConfigError(
      f"config key 'eval.evaluators' names {', '.join(map(repr, unknown))}; expected names "
      f"from {', '.join(latents.EVALUATORS)} (or '' for what the model declares)"
    )
  return Latents(job, out_dir)
