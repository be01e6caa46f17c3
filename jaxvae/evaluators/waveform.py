"""`--mode=eval` of a waveform VAE: its reconstructions of the validation clips (multi-resolution
STFT distance, spectral convergence, 80-band mel L1 in dB, SI-SDR), prior samples against the
clips (Fréchet and MMD distances in `eval.embedding`), the latent's frame rate, the
real-time factors of streaming decode and encode at batch 1 (causal models), and for a codec
its codes' use per level and the bitrate table. `scores`, `audio_distances` and
`stream_speed` also serve experiments/wave_vs_pipeline.py and tools/bench_wave.py."""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae.evaluators import plots
from jaxvae.evaluators import sample_quality
from jaxvae.evaluators import vocoding
from jaxvae.sampling.wave import WaveModel
from jaxvae.variants import wave_vae as wave_variant

STREAM_SECONDS = 10.0  # of latent frames streamed to time it,
STREAM_CALLS = 400  # in at most this many calls
STREAM_CHUNK = 1  # latent frames per streaming call


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> np.ndarray:
  """Scale-invariant signal-to-distortion ratio in dB per row [B] (Le Roux et al. 2019)."""
  ref = reference - reference.mean(-1, keepdims=True)
  est = estimate - estimate.mean(-1, keepdims=True)
  alpha = np.sum(est * ref, -1, keepdims=True) / np.maximum(
    np.sum(ref * ref, -1, keepdims=True), 1e-12
  )
  target = alpha * ref
  noise = est - target
  return 10 * np.log10(
    np.maximum(np.sum(target**2, -1), 1e-12) / np.maximum(np.sum(noise**2, -1), 1e-12)
  )


# The mel every waveform-domain Fréchet / MMD distance reads (`audio_distances`), fixed so that
# models of different features (a waveform VAE, a mel VAE through a vocoder) compare.
AUDIO_MEL = {
  "n_fft": 1024,
  "hop_length": 256,
  "n_mels": 64,
  "scale": "db",
  "db_reference": "absolute",
}


BITRATE_MEASURES = ("mel_l1_db", "stft_distance", "si_sdr_db")


def scores(waves, made, sr: int) -> dict:
  """Mean over clips of mel L1 (dB), STFT distance and spectral convergence
  (`vocoding.audio_scores`), and SI-SDR (dB), of waveforms `made` against `waves`."""
  out = vocoding.audio_scores(waves, made, sr)
  return out | {"si_sdr_db": round(float(np.mean(si_sdr(waves, made))), 3)}


def audio_distances(config, waves, made) -> dict:
  """Fréchet and MMD distances of waveforms `made` [N, samples] to `waves` [M, samples] at
  `config.data.sr`, in `eval.embedding` of the AUDIO_MEL of each (dB features in, so no
  normalization); {} with fewer than two references."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.data.scale = "db"
  name, embed = sample_quality.embedding_fn(config)
  mel = vocoding.mel_function(dict(AUDIO_MEL, sr=int(config.data.sr)))
  reference = embed(np.asarray(mel(jnp.asarray(waves))), {})
  if len(reference) < 2:
    return {}
  d = sample_quality.distances(embed(np.asarray(mel(jnp.asarray(made))), {}), reference)
  return {"frechet": round(d["frechet"], 4), "mmd2": round(d["mmd2"], 5), "embedding": name}


def stream_speed(model: WaveModel, frames: int, chunk: int) -> dict:
  """Real-time factors at batch 1 of the causal model's streaming decoder (`stream_step`, z in)
  and encoder (`stream_encode_step`, samples in), `chunk` latent frames a call over `frames`
  frames of random input, compile excluded; with the chunk's length and the latency."""
  z = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (1, frames, model.cfg.latent_dim)))
  y = 0.1 * np.asarray(jax.random.normal(jax.random.PRNGKey(1), (1, frames * model.hop)))

  def seconds(step, x, cache, size: int) -> float:
    _, cache = step(x[:, :size], cache)  # compile
    start = time.perf_counter()
    for t in range(0, x.shape[1], size):
      _, cache = step(x[:, t : t + size], cache)  # numpy out: each call synchronizes
    return time.perf_counter() - start

  audio = frames * model.hop / model.sr
  decode = seconds(model.stream_step, z, model.init_stream(1), chunk)
  encode = seconds(model.stream_encode_step, y, model.init_encode_stream(1), chunk * model.hop)
  return {
    "real_time_factor_batch1": round(audio / decode, 2),
    "encode_real_time_factor_batch1": round(audio / encode, 2),
    "chunk_frames": chunk,
    "chunk_ms": round(1000 * chunk * model.hop / model.sr, 1),
    "latency_ms": round(1000 * model.latency / model.sr, 1),
  }


class WaveQuality:
  """`run(state) -> metrics`, `scalars`, `summary` (the evaluator interface of `suite`)."""

  def __init__(self, job, out_dir: str):
    self.job = job
    self.out_dir = out_dir

  def _model(self, state) -> WaveModel:
    config = self.job.config
    params = {"generator": jax.device_get(state.params["generator"])}
    cfg = wave_variant.model_config(config.model)
    return WaveModel("(this run)", config, cfg, params, int(state.step))

  def run(self, state) -> dict:
    model = self._model(state)
    waves = vocoding.validation_clips(self.job)
    recon = model.reconstruct(waves)
    out = {
      "clips": int(len(waves)),
      "seconds_per_clip": waves.shape[-1] / model.sr,
      "step": int(state.step),
      "latent_frames_per_second": round(model.sr / model.hop, 2),
      "latent_dim": model.cfg.latent_dim,
      "reconstruction": scores(waves, recon, model.sr),
    }
    if model.is_codec:
      out["codes"] = self._code_usage(model, waves)
      if model.cfg.bottleneck == "rvq":
        out["bitrates"] = self._bitrates(model, waves)
        os.makedirs(self.out_dir, exist_ok=True)
        out["bitrates_png"] = plots.plot_bitrates(
          out["bitrates"], os.path.join(self.out_dir, "bitrates.png")
        )
    else:
      frames = -(-waves.shape[-1] // model.hop)
      samples = model.sample(len(waves), frames, seed=int(self.job.config.seed))
      out["prior"] = self._distances(waves, samples[:, : waves.shape[-1]])
    out["reconstruction"] |= self._distances(waves, recon)
    if model.cfg.causal:
      out["stream"] = self._stream_speed(model)
    return out

  def _code_usage(self, model: WaveModel, waves) -> dict:
    """Per codebook level: codes used and the perplexity of their use on the clips."""
    codes = model.encode_codes(waves)
    codes = codes[..., None] if codes.ndim == 2 else codes
    size = model.cfg.num_codes if model.cfg.bottleneck == "rvq" else int(codes.max()) + 1
    out = []
    for level in np.moveaxis(codes, -1, 0):
      counts = np.bincount(level[level >= 0].ravel(), minlength=size)
      p = counts / max(counts.sum(), 1)
      entropy = -np.sum(p[p > 0] * np.log(p[p > 0]))
      out.append(
        {"used": int(np.count_nonzero(counts)), "perplexity": round(float(np.exp(entropy)), 2)}
      )
    return {"levels": out}

  def _bitrates(self, model: WaveModel, waves) -> list[dict]:
    """Reconstruction with the first k residual codebooks, k = 1, 2, 4, 8 (up to all), and
    the bitrate that is: k x log2(num_codes) bits a latent frame."""
    rows = []
    for k in (1, 2, 4, 8, 16, 32):
      if k > model.cfg.num_quantizers:
        break
      recon = model.reconstruct(waves, n_quantizers=k)
      kbps = round(k * np.log2(model.cfg.num_codes) * model.sr / model.hop / 1000, 3)
      row = scores(waves, recon, model.sr)
      rows.append({"codebooks": k, "kbps": kbps, **{m: row[m] for m in BITRATE_MEASURES}})
    return rows

  def _distances(self, waves, made) -> dict:
    return audio_distances(self.job.config, waves, made)

  def _stream_speed(self, model: WaveModel) -> dict:
    frames = min(int(STREAM_SECONDS * model.sr / model.hop), STREAM_CALLS * STREAM_CHUNK)
    return stream_speed(model, frames, STREAM_CHUNK)

  def scalars(self, results: dict) -> dict:
    out = {
      f"eval/reconstruction/{k}": float(v)
      for k, v in results["reconstruction"].items()
      if isinstance(v, (int, float))
    }
    out |= {
      f"eval/prior/{k}": float(v)
      for k, v in results.get("prior", {}).items()
      if isinstance(v, (int, float))
    }
    for key in ("real_time_factor_batch1", "encode_real_time_factor_batch1"):
      if key in results.get("stream", {}):
        out[f"eval/stream/{key}"] = float(results["stream"][key])
    return out

  def summary(self, results: dict) -> str:
    r = results["reconstruction"]
    lines = [
      f"{results['clips']} validation clips of {results['seconds_per_clip']:.2f} s, "
      f"{results['latent_frames_per_second']} latent frames/s x {results['latent_dim']} dims:",
      f"  reconstruction: mel L1 {r['mel_l1_db']:.2f} dB, STFT distance {r['stft_distance']:.3f}, "
      f"spectral convergence {r['spectral_convergence']:.3f}, SI-SDR {r['si_sdr_db']:.2f} dB",
    ]
    if results.get("prior"):
      lines.append(
        f"  prior samples: Fréchet {results['prior']['frechet']:.3g} (reconstructions "
        f"{r.get('frechet', float('nan')):.3g}) in {results['prior']['embedding']}"
      )
    for row in results.get("bitrates", []):
      lines.append(
        f"  {row['codebooks']} codebooks ({row['kbps']} kbps): mel L1 {row['mel_l1_db']:.2f} dB, "
        f"SI-SDR {row['si_sdr_db']:.2f} dB"
      )
    if "codes" in results:
      usage = ", ".join(f"{u['used']} ({u['perplexity']:.1f})" for u in results["codes"]["levels"])
      lines.append(f"  codes used (perplexity) per level: {usage}")
    if "stream" in results:
      s = results["stream"]
      lines.append(
        f"  streaming decode: x{s['real_time_factor_batch1']:.0f} real time at batch 1, encode "
        f"x{s.get('encode_real_time_factor_batch1', float('nan')):.0f}, {s['chunk_ms']} ms chunks, "
        f"{s['latency_ms']} ms latency each way"
      )
    return "\n".join(lines)
