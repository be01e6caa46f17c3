"""How fast the vocoder's generator runs, beside the PyTorch `vocos` package's of the same size,
in one run (`python tools/benchmark.py --vocoder ...` calls this).

Both generators are untrained (timing needs no weights) and vocode the mel of `--seconds` of
audio per example at batch 1 and 16, after a warm-up call; the median of `--repeats` calls is
reported as a real-time factor (seconds of audio per second of compute) and as the ratio of
the two. The vocos side runs in a subprocess of `--vocos-python` (default: this Python, with
torch) with `--vocos-path` on its path (where `pip install --target DIR --no-deps vocos` put
it; see benchmarks/torch_ref/vocos_ref.py for torchaudio) and `--threads` torch threads; JAX
uses the machine's cores.

  pip install --target /work/vocos_pkg --no-deps vocos
  python tools/benchmark.py --vocoder --preset small --vocos-path /work/vocos_pkg
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jaxvae.models import vocoder as vocoder_model  # noqa: E402 - after the path
from jaxvae.variants import registry  # noqa: E402
from jaxvae.variants import vocoder as vocoder_variant  # noqa: E402


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--preset", default="small", help="configs/vocoder.py preset ('' = full size)")
  p.add_argument("--seconds", type=float, default=3.0, help="audio per example")
  p.add_argument("--batches", default="1,16")
  p.add_argument("--repeats", type=int, default=10)
  p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
  p.add_argument("--vocos-python", default=sys.executable, help="the Python of the reference")
  p.add_argument("--vocos-path", default="", help="vocos's install folder; '' skips it")
  p.add_argument("--json", default="", help="write the record here")
  return p.parse_args(argv)


def time_jax(cfg, frames: int, batches, repeats: int) -> dict:
  generator = vocoder_model.VocosGenerator(cfg)
  params = generator.init(jax.random.PRNGKey(0), jnp.zeros((1, cfg.n_mels, frames)))["params"]
  fn = jax.jit(lambda p, mel: generator.apply({"params": p}, mel))
  out = {"parameters": int(vocoder_model.num_parameters(params)), "seconds": {}}
  for batch in batches:
    mel = jnp.asarray(np.random.default_rng(0).standard_normal((batch, cfg.n_mels, frames)) * 10)
    fn(params, mel).block_until_ready()
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      fn(params, mel).block_until_ready()
      times.append(time.perf_counter() - start)
    out["seconds"][str(batch)] = float(np.median(times))
  return out


def time_vocos(python: str, cfg, frames: int, args) -> dict:
  cmd = [
    python,
    "-m",
    "benchmarks.torch_ref.vocos_ref",
    f"--n-mels={cfg.n_mels}",
    f"--dim={cfg.dim}",
    f"--intermediate={cfg.intermediate}",
    f"--layers={cfg.layers}",
    f"--n-fft={cfg.head_fft}",
    f"--hop={cfg.hop_length}",
    f"--frames={frames}",
    f"--batches={args.batches}",
    f"--repeats={args.repeats}",
    f"--threads={args.threads}",
  ]
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([args.vocos_path, ROOT]))
  done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
  if done.returncode != 0:
    return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
  return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
  args = parse_args(argv)
  spec = "configs/vocoder.py" + (f":{args.preset}" if args.preset else "")
  config = registry.load_config(os.path.join(ROOT, spec))
  cfg = vocoder_variant.model_config(config.model)
  samples = int(round(args.seconds * cfg.sr))
  frames = 1 + samples // cfg.hop_length
  audio_s = cfg.hop_length * (frames - 1) / cfg.sr
  batches = [int(b) for b in args.batches.split(",")]
  record = {
    "preset": args.preset,
    "seconds": audio_s,
    "frames": frames,
    "jax": time_jax(cfg, frames, batches, args.repeats),
    "machine": f"{os.cpu_count()} cores, jax {jax.__version__} on {jax.default_backend()}",
  }
  if args.vocos_path:
    record["vocos"] = time_vocos(args.vocos_python, cfg, frames, args)
  rows = [f"vocoder '{args.preset}', {audio_s:.2f} s per example ({frames} frames)"]
  for batch in batches:
    ours = batch * audio_s / record["jax"]["seconds"][str(batch)]
    line = f"  batch {batch:>2}: jaxvae x{ours:.0f} real time"
    ref = record.get("vocos", {}).get("seconds", {}).get(str(batch))
    if ref:
      theirs = batch * audio_s / ref
      line += f", vocos x{theirs:.0f} ({args.threads} threads): ratio {ours / theirs:.2f}"
    rows.append(line)
  rows.append(
    f"  parameters: jaxvae {record['jax']['parameters']:,}"
    + (
      f", vocos {record['vocos']['parameters']:,}"
      if "parameters" in record.get("vocos", {})
      else ""
    )
  )
  if "error" in record.get("vocos", {}):
    rows.append(f"  vocos reference failed: {record['vocos']['error']}")
  print("\n".join(rows))
  print(json.dumps(record))
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(record, f, indent=1)
  return record


if __name__ == "__main__":
  main()
