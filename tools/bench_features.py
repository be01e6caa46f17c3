"""Throughput of jaxvae.audio.features (batched, jitted) against librosa on the same clips.

    python tools/bench_features.py                                  # 64 clips x 3 s at 22050 Hz
    python tools/bench_features.py --sr 16000 --seconds 1 --n-fft 1024 --num-clips 256
    python tools/bench_features.py --feature mfcc --json /tmp/bench.json

Clips are deterministic synthetic music (harmonic notes + noise); speed does not depend on
content. The JAX path is timed per `--batch` clips from host numpy in to host numpy out
(transfers included), once per FFT dtype; the first call, which compiles, is reported
separately and excluded from throughput. librosa is timed two ways: one clip at a time (how it
is usually called) and as one multichannel call on all clips, with numpy's BLAS limited to
`--blas-threads` (default 1: on a busy 2-core machine two OpenBLAS threads made librosa's
per-clip loop ~10x slower). Each timing is the best of `--repeats`. Prints one JSON object;
`--json PATH` also writes it to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import jax
import librosa
import numpy as np
import threadpoolctl

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jaxvae.audio import features  # pylint: disable=g-import-not-at-top,wrong-import-position


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--num-clips", type=int, default=64)
  p.add_argument("--seconds", type=float, default=3.0)
  p.add_argument("--sr", type=int, default=features.SR)
  p.add_argument("--batch", type=int, default=64, help="clips per jitted call")
  p.add_argument("--n-fft", type=int, default=features.N_FFT)
  p.add_argument("--hop-length", type=int, default=features.HOP_LENGTH)
  p.add_argument("--n-mels", type=int, default=features.N_MELS)
  p.add_argument(
    "--feature",
    choices=("mel", "mel_db", "mfcc"),
    default="mel_db",
    help="mel power, its dB (what the feature store keeps), or 20 MFCCs",
  )
  p.add_argument(
    "--fft-dtypes",
    default="float64,float32",
    help="comma-separated FFT dtypes of the JAX path to time",
  )
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument(
    "--blas-threads",
    type=int,
    default=1,
    help="numpy BLAS threads while librosa is timed (0 = library default)",
  )
  p.add_argument("--json", default=None, help="also write the result here")
  return p.parse_args(argv)


def make_clips(num_clips: int, seconds: float, sr: int) -> np.ndarray:
  """`[num_clips, samples]` float32: a few harmonic notes per clip plus a -50 dB noise floor."""
  rng = np.random.default_rng(0)
  t = np.arange(int(sr * seconds)) / sr
  clips = np.empty((num_clips, t.size), np.float32)
  for i in range(num_clips):
    f0 = rng.uniform(80.0, 800.0)
    y = sum(np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 6.3)) / h for h in range(1, 7))
    y *= np.exp(-2.0 * (t % 0.5))  # a new attack every half second
    y += 10 ** (-50 / 20) * rng.standard_normal(t.size)
    clips[i] = 0.3 * y / np.max(np.abs(y))
  return clips


def jax_fn(args, fft_dtype: str):
  """Host batch -> host features, through the public API (one jitted graph per FFT dtype)."""
  mel_kwargs = dict(
    sr=args.sr,
    n_fft=args.n_fft,
    hop_length=args.hop_length,
    n_mels=args.n_mels,
    fft_dtype=fft_dtype,
  )

  @jax.jit
  def compute(y):
    if args.feature == "mfcc":
      return features.mfcc(y, **mel_kwargs)
    mel = features.mel_spectrogram(y, **mel_kwargs)
    return features.power_to_db(mel) if args.feature == "mel_db" else mel

  return lambda batch: np.asarray(compute(batch))


def librosa_fn(args):
  """The same feature with librosa, for one clip or a multichannel `[clips, samples]` array."""
  kwargs = dict(sr=args.sr, n_fft=args.n_fft, hop_length=args.hop_length, n_mels=args.n_mels)

  def compute(y):
    if args.feature == "mfcc":
      return librosa.feature.mfcc(y=y, **kwargs)
    mel = librosa.feature.melspectrogram(y=y, **kwargs)
    return librosa.power_to_db(mel) if args.feature == "mel_db" else mel

  return compute


def batches(clips: np.ndarray, batch: int):
  """Fixed-size batches (the last one zero-padded) so only one shape is ever compiled."""
  for start in range(0, len(clips), batch):
    chunk = clips[start : start + batch]
    if len(chunk) < batch:
      chunk = np.concatenate(
        [chunk, np.zeros((batch - len(chunk),) + chunk.shape[1:], chunk.dtype)]
      )
    yield chunk


def best_time(run, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return min(times)


def time_jax(args, clips: np.ndarray, fft_dtype: str) -> dict:
  fn = jax_fn(args, fft_dtype)
  first = next(batches(clips, args.batch))
  start = time.perf_counter()
  fn(first)
  first_call = time.perf_counter() - start
  seconds = best_time(lambda: [fn(b) for b in batches(clips, args.batch)], args.repeats)
  steady = best_time(lambda: fn(first), args.repeats)
  return {
    "first_call_s": round(first_call, 4),
    "compile_s": round(max(first_call - steady, 0.0), 4),
    "seconds": round(seconds, 4),
    "clips_per_s": round(len(clips) / seconds, 2),
  }


def time_librosa(args, clips: np.ndarray) -> dict:
  fn = librosa_fn(args)
  limits = args.blas_threads if args.blas_threads > 0 else None
  with threadpoolctl.threadpool_limits(limits=limits, user_api="blas"):
    fn(clips[0])  # warm up (imports, first-call allocations)
    loop = best_time(lambda: [fn(c) for c in clips], args.repeats)
    multi = best_time(lambda: fn(clips), args.repeats)
  return {
    "per_clip": {"seconds": round(loop, 4), "clips_per_s": round(len(clips) / loop, 2)},
    "multichannel": {"seconds": round(multi, 4), "clips_per_s": round(len(clips) / multi, 2)},
  }


def agreement(args, clips: np.ndarray, fft_dtype: str) -> float:
  """Relative Frobenius error of the JAX features against librosa on the first clip."""
  ours = jax_fn(args, fft_dtype)(clips[:1])[0].astype(np.float64)
  ref = librosa_fn(args)(clips[0]).astype(np.float64)
  return float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))


def main(argv=None) -> dict:
  args = parse_args(argv)
  clips = make_clips(args.num_clips, args.seconds, args.sr)
  result = {
    "setting": {
      k: getattr(args, k)
      for k in (
        "num_clips",
        "seconds",
        "sr",
        "batch",
        "n_fft",
        "hop_length",
        "n_mels",
        "feature",
        "repeats",
        "blas_threads",
      )
    },
    "frames": features.num_frames(clips.shape[-1], args.n_fft, args.hop_length),
    "machine": {
      "jax_device": str(jax.devices()[0]),
      "cpu_count": os.cpu_count(),
      "processor": platform.processor() or platform.machine(),
      "jax": jax.__version__,
      "librosa": librosa.__version__,
    },
    "librosa": time_librosa(args, clips),
    "jax": {},
  }
  for fft_dtype in args.fft_dtypes.split(","):
    timing = time_jax(args, clips, fft_dtype)
    timing["rel_err_vs_librosa"] = agreement(args, clips, fft_dtype)
    for name, ref in result["librosa"].items():
      timing[f"speedup_vs_librosa_{name}"] = round(timing["clips_per_s"] / ref["clips_per_s"], 2)
    result["jax"][fft_dtype] = timing
  text = json.dumps(result, indent=2)
  print(text)
  if args.json:
    with open(args.json, "w") as f:
      f.write(text + "\n")
  return result


if __name__ == "__main__":
  main()
