"""How fast the waveform VAE decodes, offline and streaming, and encodes streaming (`python
tools/benchmark.py --wave ...` calls this).

An untrained model of `configs/wave_vae.py:<preset>` at `--sr` (timing needs no weights)
decodes `--seconds` of latent frames at batch 1: offline in one call, and as a stream of
`--chunk` latent frames per call through the cached causal step (`stream_decode`), and encodes
the same length as a stream (`stream_encode`), after a warm-up call each
(`evaluators.waveform.stream_speed`); reported as real-time factors (seconds of audio per second
of compute), with the chunk's duration and the PQMF's latency.

  python tools/benchmark.py --wave --preset small --sr 44100
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jaxvae.evaluators import waveform  # noqa: E402 - after the path
from jaxvae.models import wave_vae as wave_model  # noqa: E402
from jaxvae.sampling.wave import WaveModel  # noqa: E402
from jaxvae.variants import registry  # noqa: E402
from jaxvae.variants import wave_vae as wave_variant  # noqa: E402


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--preset", default="small", help="configs/wave_vae.py preset ('' = full size)")
  p.add_argument("--sr", type=int, default=44100, help="sample rate (the model is the same)")
  p.add_argument("--seconds", type=float, default=10.0, help="audio decoded")
  p.add_argument("--chunk", type=int, default=1, help="latent frames per streaming call")
  return p.parse_args(argv)


def measure(args) -> dict:
  spec = os.path.join(ROOT, "configs", "wave_vae.py") + (f":{args.preset}" if args.preset else "")
  config = registry.load_config(spec, {"data.sr": str(args.sr)})
  cfg = wave_variant.model_config(config.model)
  module = wave_model.WaveVAE(cfg)
  batch = {"x": np.zeros((1, 1, 2 * cfg.hop), np.float32), "mask": np.ones((1,), np.float32)}
  params = module.init({"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}, batch)
  model = WaveModel("(untrained)", config, cfg, {"generator": params["params"]["generator"]}, 0)
  frames = int(args.seconds * args.sr / cfg.hop)
  z = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (1, frames, cfg.latent_dim)))
  model.decode(z)  # compile
  start = time.perf_counter()
  model.decode(z)
  offline = time.perf_counter() - start
  out = {
    "preset": args.preset,
    "sr": args.sr,
    "hop": cfg.hop,
    "latent_frames_per_second": round(args.sr / cfg.hop, 2),
    "generator_parameters": wave_model.num_parameters(params["params"]["generator"]),
    "audio_seconds": round(frames * cfg.hop / args.sr, 3),
    "offline_real_time_factor": round(frames * cfg.hop / args.sr / offline, 1),
  }
  if cfg.causal:
    speed = waveform.stream_speed(model, frames, args.chunk)
    out |= {
      "stream_chunk_frames": args.chunk,
      "stream_chunk_ms": speed["chunk_ms"],
      "stream_latency_ms": speed["latency_ms"],
      "stream_real_time_factor": round(speed["real_time_factor_batch1"], 1),
      "stream_encode_real_time_factor": round(speed["encode_real_time_factor_batch1"], 1),
    }
  return out


def main(argv=None) -> int:
  print(json.dumps(measure(parse_args(sys.argv[1:] if argv is None else argv)), indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
