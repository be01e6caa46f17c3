"""How fast a trained model answers through `jaxvae.load`: the first call of each function
(tracing and compiling) against later calls (cached), per batch size, and the exported
artifacts against the library, in one run, as ratios.

    python tools/api_speed.py runs/conv_small runs/mt_stage3 [--batch 1 64] [--repeats 20]

Audio models: `encode` and `decode` of normalized features, and the exported encoder
(`jax.export`, deserialized in this process). MIDI models: `generate_tokens` (tokens per
second, with the run's `generate.num_tokens`) and, for stages 2-3, `encode_tokens`. Prints
one table; `--json` writes the records.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jaxvae  # noqa: E402
from jaxvae import api  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, float]:
  """(seconds of the first call, median seconds of `repeats` later calls); the outputs are
  fetched to the host, so device work is included."""
  start = time.perf_counter()
  fn()
  first = time.perf_counter() - start
  later = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    later.append(time.perf_counter() - start)
  return first, float(np.median(later))


def _record(name: str, batch: int, first: float, steady: float, unit_count: int, unit: str):
  return {
    "function": name,
    "batch": batch,
    "first_s": first,
    "steady_ms": 1e3 * steady,
    "first_over_steady": first / max(steady, 1e-9),
    f"{unit}_per_s": unit_count / max(steady, 1e-9),
  }


def measure(model, batches=(1, 64), repeats: int = 20) -> list[dict]:
  """Timing records of `model` (from `jaxvae.load`)."""
  rng = np.random.default_rng(0)
  records = []
  if isinstance(model, api.MidiModel):
    n = int(model.config.generate.num_tokens)
    for b in batches:
      first, steady = timed(lambda b=b: model.generate_tokens(num=b, seed=1), repeats)
      records.append(_record("generate_tokens", b, first, steady, b * n, "tokens"))
      if model.latent_dim:
        windows = rng.integers(3, 100, size=(b, model.config.data.midi.seq_len)).astype(np.int32)
        windows[:, 0] = 1
        first, steady = timed(lambda w=windows: model.encode_tokens(w), repeats)
        records.append(_record("encode_tokens", b, first, steady, b, "examples"))
    return records
  from jax import export as jax_export

  from jaxvae.modes import export

  with tempfile.TemporaryDirectory() as folder:
    export.write(model, folder)
    with open(os.path.join(folder, "encoder.jax_export"), "rb") as f:
      exported = jax_export.deserialize(f.read())
  for b in batches:
    x = rng.normal(size=(b, *model.spec.input_shape)).astype(np.float32)
    first, steady = timed(lambda x=x: model.encode(x), repeats)
    records.append(_record("encode", b, first, steady, b, "examples"))
    inputs = [x]
    if model.spec.lyrics_dim:  # the multimodal encoder: no lyrics (mask 0)
      inputs += [np.zeros((b, model.spec.lyrics_dim), np.float32), np.zeros((b,), np.float32)]
    first, steady = timed(lambda i=inputs: [np.asarray(a) for a in exported.call(*i)], repeats)
    records.append(_record("exported encoder", b, first, steady, b, "examples"))
    if isinstance(model, api.AudioModel):
      z = rng.normal(size=(b, model.latent_dim)).astype(np.float32)
      first, steady = timed(lambda z=z: model.decode(z), repeats)
      records.append(_record("decode", b, first, steady, b, "examples"))
  return records


def table(records: list[dict]) -> str:
  lines = [
    f"{'function':18s} {'batch':>5s} {'first call s':>12s} {'later ms':>9s} {'ratio':>7s} rate"
  ]
  for r in records:
    rate = next(f"{v:,.0f} {k[:-6]}/s" for k, v in r.items() if k.endswith("_per_s"))
    lines.append(
      f"{r['function']:18s} {r['batch']:5d} {r['first_s']:12.3f} {r['steady_ms']:9.2f} "
      f"{r['first_over_steady']:7.0f} {rate}"
    )
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("workdirs", nargs="+")
  p.add_argument("--batch", type=int, nargs="+", default=[1, 64])
  p.add_argument("--repeats", type=int, default=20)
  p.add_argument("--json", default="")
  args = p.parse_args(argv)
  out = {}
  for workdir in args.workdirs:
    model = jaxvae.load(workdir)
    out[workdir] = measure(model, tuple(args.batch), args.repeats)
    print(f"{workdir} ({model.config.model.name}, step {model.step})")
    print(table(out[workdir]))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(out, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
