"""Where a KV-cached sampling step of the MIDI transformer spends its time (the parts behind
`tools/benchmark.py --generate-tokens`' tokens/s).

An untrained stage-1 model of the benchmark's config (the seed's size unless --preset) at
batch `--batch-size`: milliseconds per step of the jitted decode loop alone (the cached decode
step and an argmax, `sampling.tokens.decode_step`) for each cache length of `--lengths`, and
of the sampling head alone (`sampling.tokens.sample_logits`: the nucleus at top_p 0.95 and the
draw, on [batch, vocab] logits), each timed over `--steps` steps after a compiling run.

  python tools/bench_sampling.py --lengths 64,512,1024
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))

import benchmark  # noqa: E402 - after the path

from jaxvae.sampling import tokens as token_sampling  # noqa: E402
from jaxvae.variants import registry  # noqa: E402


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--preset", default="", help="music_transformer_vaegan.py preset")
  p.add_argument("--batch-size", type=int, default=16)
  p.add_argument("--lengths", default="64,512", help="cache lengths, comma-separated")
  p.add_argument("--steps", type=int, default=63, help="timed steps per measurement")
  return p.parse_args(argv)


def seconds(fn, *args) -> float:
  jax.block_until_ready(fn(*args))  # compile
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def measure(args) -> dict:
  bench_args = ["--models", "music_transformer"] + (
    ["--preset", args.preset] if args.preset else []
  )
  config = benchmark.load_config("music_transformer", benchmark.parse_args(bench_args))
  shape = benchmark.input_shape(config)
  model = registry.get("music_transformer").build_model(
    config.model, benchmark.data_spec(config, shape), dtype=config.dtype
  )
  b, steps = args.batch_size, args.steps
  batch = {"tokens": jnp.ones((b, shape[-1]), jnp.int32), "mask": jnp.ones((b,))}
  params = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, batch)["params"]
  out = {"batch": b, "steps": steps, "vocab": int(model.cfg.vocab_size), "decode_ms": {}}
  for length in (int(n) for n in args.lengths.split(",")):

    def decode(params, length=length):
      cache = token_sampling.init_cache(model, b, length)

      def body(_, carry):
        token, cache = carry
        logits, cache = token_sampling.decode_step(model, params, cache, token)
        return jnp.argmax(logits[:, 0], -1)[:, None].astype(jnp.int32), cache

      return jax.lax.fori_loop(0, steps, body, (jnp.ones((b, 1), jnp.int32), cache))[0]

    out["decode_ms"][length] = round(1e3 * seconds(jax.jit(decode), params) / steps, 3)

  @jax.jit
  def head(key):
    logits = jax.random.normal(key, (b, int(model.cfg.vocab_size)))

    def body(i, total):
      # Logits that depend on the loop (by a tiny amount) keep XLA from hoisting the nucleus.
      step_logits = logits + 1e-30 * total[:, None].astype(jnp.float32)
      drawn = token_sampling.sample_logits(step_logits, jax.random.fold_in(key, i), 1.0, 0, 0.95)
      return total + drawn

    return jax.lax.fori_loop(0, steps, body, jnp.zeros((b,), jnp.int32))

  out["sampling_head_ms"] = round(1e3 * seconds(head, jax.random.PRNGKey(0)) / steps, 3)
  return out


def main(argv=None) -> int:
  print(json.dumps(measure(parse_args(sys.argv[1:] if argv is None else argv)), indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
