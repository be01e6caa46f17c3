"""`--mode=eval` on a vocoder: how close its audio is to the original, beside Griffin-Lim from the
same features, and how fast it runs.

On the validation clips (at most `eval.vocoder_clips`): the features each clip's store would
hold (`data.featurize.mel_db`; with `vocoder.inputs_from`, that VAE's reconstructions of
them, which both sides are then given), vocoded by the restored generator and by Griffin-Lim
(librosa's NNLS filterbank inverse, 32 iterations, seeded), each compared with the original
waveform:
- `mel_l1_db`: mean |difference| of 80-band log-mel in dB (n_fft 1024, hop 256);
- `stft_distance`: spectral convergence + log-magnitude L1 over STFT sizes 512, 1024, 2048
  (hop n / 4), and `spectral_convergence` alone (its first term);
- `frechet`, `mmd2`: the Fréchet and kernel distances of the vocoded set to the original
  clips in `eval.embedding` (evaluators.sample_quality: the same pluggable embedding of mel
  power in dB that scores the VAEs' samples);
- real-time factors: seconds of audio made per second of compute, for the vocoder at batch 1
  and batch 16 (after a compiled warm-up run, median of `eval.timing_repeats`) and for
  Griffin-Lim per clip.
A listening page `eval/listening/listening.html` puts the first clips side by side (original,
Griffin-Lim, vocoder) with their spectrograms.
"""

from __future__ import annotations

import functools
import html
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae import workdir as workdir_lib
from jaxvae.audio import synthesis
from jaxvae.data import featurize
from jaxvae.data import listing
from jaxvae.data import store as store_lib
from jaxvae.evaluators import plots
from jaxvae.evaluators import sample_quality
from jaxvae.losses import spectral
from jaxvae.sampling import prior
from jaxvae.sampling.vocoder import Vocoder
from jaxvae.variants import vocoder as vocoder_variant

GRIFFIN_LIM_ITERATIONS = 32
LISTENING_CLIPS = 3
METRICS = ("mel_l1_db", "stft_distance", "spectral_convergence")


class VocoderQuality:
  """`run(state) -> metrics`, `scalars(metrics)`, `summary(metrics)` (the evaluator interface
  of `evaluators.suite`)."""

  def __init__(self, job, out_dir: str):
    self.job = job
    self.out_dir = out_dir

  def run(self, state) -> dict:
    config = self.job.config
    voc = Vocoder(
      workdir="(this run)",
      settings=vocoder_variant.feature_settings(config),
      cfg=self.job.model.cfg,
      # The EMA of the generator's weights when the run keeps one (vocoder.ema_decay).
      params=jax.device_get(state.opt_state.get("ema_gen", state.params["generator"])),
      step=int(state.step),
    )
    waves = self._clips()
    self.mel_params = voc.cfg.mel_params
    # The model's own features of the clips: the store's mel, or a VAE's reconstructions of
    # it with vocoder.inputs_from (its weights in the state's 'frozen' collection).
    model = self.job.model
    features = jax.jit(lambda v, w: model.apply(v, w, method="features"))
    mel = np.asarray(features(dict(state.model_state), jnp.asarray(waves)))
    n = waves.shape[-1]
    vocoded = voc(mel, length=n)
    start = time.perf_counter()
    griffin = np.stack([self._griffin_lim(m, n) for m in mel])
    gl_seconds = (time.perf_counter() - start) / len(mel)
    out = {"clips": int(len(waves)), "seconds_per_clip": n / voc.sr, "step": int(state.step)}
    if config.vocoder.get("inputs_from", ""):
      out["features_from"] = f"reconstructions by {config.vocoder.inputs_from}"
    for name, y in (("vocoder", vocoded), ("griffin_lim", griffin)):
      out[name] = audio_scores(waves, y, voc.sr)
    clip_s = n / voc.sr
    out["griffin_lim"]["real_time_factor"] = round(clip_s / gl_seconds, 2)
    repeats = int(config.eval.get("timing_repeats", 5))
    for batch in (1, 16):
      seconds = _time(voc, mel, batch, repeats)
      out["vocoder"][f"real_time_factor_batch{batch}"] = round(batch * clip_s / seconds, 2)
    self._distances(out, waves, {"vocoder": vocoded, "griffin_lim": griffin})
    out["ratio_mel_l1_db"] = round(out["vocoder"]["mel_l1_db"] / out["griffin_lim"]["mel_l1_db"], 4)
    out["listening"] = self._listening(waves, griffin, vocoded, mel, voc.sr)
    return out

  def _clips(self) -> np.ndarray:
    return validation_clips(self.job)

  def _distances(self, out: dict, waves, made: dict) -> None:
    """Fréchet and kernel distances to the originals in `eval.embedding` (dB features in, so
    no normalization: empty statistics)."""
    # The embedding reads mel power in dB through the config's scale: dB features here.
    config = self.job.config.copy_and_resolve_references()
    with config.unlocked():
      config.data.scale = "db"
    name, embed = sample_quality.embedding_fn(config)
    mel = mel_function(dict(self.mel_params, scale="db"))
    reference = embed(np.asarray(mel(jnp.asarray(waves))), {})
    if len(reference) < 2:
      return
    out["embedding"] = name
    for side, y in made.items():
      d = sample_quality.distances(embed(np.asarray(mel(jnp.asarray(y))), {}), reference)
      out[side] |= {"frechet": round(d["frechet"], 4), "mmd2": round(d["mmd2"], 5)}

  def _griffin_lim(self, mel: np.ndarray, n: int) -> np.ndarray:
    """Griffin-Lim from features in the store's units (no normalization: empty stats)."""
    power = prior.to_power(mel, {}, self.job.config)
    return prior.griffin_lim(power, self.job.config, GRIFFIN_LIM_ITERATIONS, length=n)

  def _listening(self, waves, griffin, vocoded, mel, sr) -> str:
    folder = os.path.join(self.out_dir, "listening")
    os.makedirs(folder, exist_ok=True)
    rows = []
    for i in range(min(LISTENING_CLIPS, len(waves))):
      cells = []
      for name, y in (("original", waves[i]), ("griffin_lim", griffin[i]), ("vocoder", vocoded[i])):
        wav = synthesis.write_wav(os.path.join(folder, f"clip{i:02d}_{name}.wav"), y, sr)
        cells.append(
          f"<td><b>{name}</b><br><audio controls src='{html.escape(os.path.basename(wav))}'>"
          "</audio></td>"
        )
      specs = np.asarray(
        mel_function(self.mel_params)(jnp.asarray([waves[i], griffin[i], vocoded[i]]))
      )
      png = os.path.join(folder, f"clip{i:02d}.png")
      plots.plot_spectrograms(specs, png, titles=["original", "Griffin-Lim", "vocoder"])
      cells.append(f"<td><img src='{os.path.basename(png)}' width='600'></td>")
      rows.append("<tr>" + "".join(cells) + "</tr>")
    page = os.path.join(folder, "listening.html")
    workdir_lib.write_text(
      page,
      "<html><body><h3>Validation clips: original, Griffin-Lim (32 iterations) and the "
      "vocoder, from the same features</h3><table>" + "".join(rows) + "</table></body></html>",
    )
    return page

  def scalars(self, results: dict) -> dict:
    out = {}
    for side in ("vocoder", "griffin_lim"):
      for k, v in results[side].items():
        out[f"eval/{side}/{k}"] = float(v)
    return out

  def summary(self, results: dict) -> str:
    v, g = results["vocoder"], results["griffin_lim"]
    return (
      f"{results['clips']} validation clips of {results['seconds_per_clip']:.2f} s:\n"
      f"  mel L1 {v['mel_l1_db']:.2f} dB (Griffin-Lim {g['mel_l1_db']:.2f} dB, ratio "
      f"{results['ratio_mel_l1_db']:.2f}), STFT distance {v['stft_distance']:.3f} "
      f"({g['stft_distance']:.3f}), spectral convergence {v['spectral_convergence']:.3f} "
      f"({g['spectral_convergence']:.3f})"
      + (
        f", Fréchet {v['frechet']:.3g} ({g['frechet']:.3g}) in {results['embedding']}"
        if "frechet" in v
        else ""
      )
      + "\n"
      f"  real time x{v['real_time_factor_batch1']:.0f} at batch 1, "
      f"x{v['real_time_factor_batch16']:.0f} at batch 16 (Griffin-Lim "
      f"x{g['real_time_factor']:.1f})\n  listen: {results['listening']}"
    )


def validation_clips(job) -> np.ndarray:
  """Up to `eval.vocoder_clips` validation waveforms [N, samples] of a waveform store, bad
  files (their silence stand-ins) left out unless nothing else is there."""
  examples = job.val_examples
  limit = int(job.config.eval.get("vocoder_clips", 32))
  rows = [i for i in examples.indices if not examples.store.manifest["examples"][i]["bad"]]
  rows = np.asarray(rows[:limit] or examples.indices[:limit])
  return np.asarray(examples.store.features[rows][:, 0, :], np.float32)


def mel_function(params: dict):
  """The jitted feature function of `params`, built once per parameter set."""
  return _mel_cached(json.dumps(params, sort_keys=True))


@functools.lru_cache(maxsize=8)
def _mel_cached(params_json: str):
  params = json.loads(params_json)
  return jax.jit(lambda y: featurize.mel_db(y, params, fft_dtype="float32"))


def audio_scores(reference: np.ndarray, y: np.ndarray, sr: int) -> dict:
  """Mean over clips of the three distances (module doc)."""
  a, b = jnp.asarray(reference), jnp.asarray(y)
  sc, log_mag = spectral.stft_terms(a, b)
  return {
    "mel_l1_db": round(float(jnp.mean(spectral.mel_l1_db(a, b, sr))), 4),
    "stft_distance": round(float(jnp.mean(sc + log_mag)), 4),
    "spectral_convergence": round(float(jnp.mean(sc)), 4),
  }


def _time(voc: Vocoder, mel: np.ndarray, batch: int, repeats: int) -> float:
  """Median seconds of one vocoder call on `batch` clips (the clips repeated to fill it)."""
  x = np.resize(mel, (batch, *mel.shape[1:])).astype(np.float32)
  voc(x)  # compile
  times = []
  for _ in range(max(1, repeats)):
    start = time.perf_counter()
    voc(x)
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def audio_reconstruction(job, voc: Vocoder, rows, recon: np.ndarray, limit: int = 32) -> dict:
  """An audio VAE's reconstructions in audio: for the store rows `rows` (validation clips,
  at most `limit`), the original waveforms (the clips' files decoded again as the store
  decoded them), the reconstructions vocoded by `voc`, the same reconstructions through
  Griffin-Lim (32 iterations, the path without a vocoder: whether the vocoder helps on this
  model's outputs, not only on real features), and the clips' own features vocoded (what a
  perfect autoencoder would give through this vocoder), each scored against the originals
  (mel L1 in dB, STFT distance, spectral convergence)."""
  config, store = job.config, job.store
  items = {item.clip_id: item for item in listing.list_dataset(config)}
  waves, kept = [], []
  for k, row in enumerate(rows[:limit]):
    example = store.manifest["examples"][int(row)]
    item = items.get(example["clip_id"])
    if item is None or example.get("bad"):
      continue
    segments, _ = store_lib.decode_examples(item, config, on_error="skip")
    if example["segment"] < len(segments):
      waves.append(segments[example["segment"]])
      kept.append(k)
  if not waves:
    return {"available": False, "reason": "no validation clip could be read again"}
  original = np.stack(waves)
  n = original.shape[-1]
  units = lambda x: prior.to_feature_units(x, store, config).astype(np.float32)
  vocoded = voc(units(recon[kept]), length=n)
  griffin = np.stack([prior.features_to_audio(r, store, config, length=n)[:n] for r in recon[kept]])
  features = np.stack([np.asarray(store.features[int(rows[k])]) for k in kept])
  ceiling = voc(features, length=n)
  return {
    "available": True,
    "clips": len(kept),
    "vocoder": voc.workdir,
    "reconstruction": audio_scores(original, vocoded, voc.sr),
    "reconstruction_griffin_lim": audio_scores(original, griffin, voc.sr),
    "own_features": audio_scores(original, ceiling, voc.sr),
  }
