"""Train-step benchmark of jaxvae's variants, timed against PyTorch references in the same run.

    python tools/benchmark.py --models puzzle_vqvae --batch-size 64 --steps 30 --json /tmp/b.json
    python tools/benchmark.py --models conv_vae --preset small --profile
    python tools/benchmark.py --models conv_vae --batch-size 4 --steps 5    # seed size, 63.6 M
    python tools/benchmark.py --models music_transformer --batch-size 8 --threads 1,2
    python tools/benchmark.py --models all --preset small --frameworks jax
    python tools/benchmark.py --models conv_vae --preset small --frameworks jax,jax.unguarded
    python tools/benchmark.py --models music_transformer --preset high_quality --dtype bfloat16 \
        --frameworks jax --generate-tokens 1024          # MFU at a large preset, sampling speed
    python tools/benchmark.py --wallclock --config=configs/puzzle_vqvae.py:small --runs 2 \
        --fresh-cache    # a whole training command's wall time by phase (tools/wallclock.py)

`--models` takes config names (`configs/<name>.py`); `music_transformer` is short for
`music_transformer_vaegan` (stage 1, the causal LM, unless `--override stage=2`).

One record per (model, framework), each measured in a fresh subprocess (unless --no-isolate)
so that peak memory is that model's and the frameworks' thread pools never compete:

  compile_s        wall time of the first step: JAX traces and compiles it with XLA; for torch
                   eager it is the warm-up step (allocations, kernel choice), for
                   --torch-compile it includes torch.compile's (inductor) compilation.
  samples_per_s    `--steps` steps on one batch already on the device, synchronized only after
                   the last (JAX dispatches asynchronously); the best of `--repeats` runs.
                   tokens_per_s = samples_per_s x sequence length for token models.
  input_wait_frac  a second loop fed by the trainer's own Grain pipeline
                   (`jaxvae.data.pipeline.train_iterator`) over an in-memory source: the share
                   of its wall time spent blocked in next().
  peak_mem_bytes   the device's peak (GPU) where it reports one, else the process's peak RSS
                   (`peak_mem_kind` says which).
  xla_flops_per_step, xla_tflops_per_s
                   XLA's cost analysis of the compiled step (all ops, recomputation included)
                   and the rate it runs at.
  model_flops_per_step, mfu
                   the stage-1 transformer's model FLOPs (PaLM / MaxText: 6 N per token plus
                   12 L d x attended keys) and model FLOPs utilization, against --peak-tflops
                   or a table of known GPUs (H100, H200, A100); hfu is XLA's count over peak.
  generate_tokens_per_s
                   with --generate-tokens N: the KV-cached sampler, N tokens x batch (JAX's
                   jitted loop; torch's `generate` of the reference, eager, the same nucleus).
  profile          with --profile: the ops that take the step's time (jax.profiler trace /
                   torch.profiler) and, for JAX, XLA's FLOP count of the step and the op
                   time by model part (module, forward / backward: `model_part`).

Both frameworks read the same jaxvae config, so the architecture, batch and optimizer
(Adam, lr, gradient clipping) agree; the torch references are in `benchmarks/torch_ref`
(`pip install -e '.[bench]'`). Batches are synthetic: normal features (uniform in [0, 1] for
min-max-normalized configs such as the VQ-VAE), random labels, random event tokens.
A model without a config or registry entry, one that does not build from synthetic data, or
one without a torch reference is reported as skipped with the reason; it never stops the run.
`--json PATH` writes the records as a list (skipped ones carry `skipped` and null measurements).

Threads: torch gets `--threads` (default os.cpu_count()); a list such as 1,2 times each.
On a shared machine more threads than free cores make OpenMP's spinning barriers stall
(torch at 2 threads ran 2-10x slower than at 1 on a loaded 2-core host), so time both there.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import glob
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from jaxvae import errors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# Benchmark names that are not config file names.
ALIASES = {"music_transformer": "music_transformer_vaegan"}
# Label vocabularies of the seed-000 corpus (the demo corpus has the same columns).
LABELS = {"language": 4, "genre": 3}
LYRICS_DIM = 768  # XLM-RoBERTa base, what tools/embed_lyrics.py writes
FIRST_EVENT = 4  # token ids below are the specials START, END, PAD, UNK


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument(
    "--models", default="all", help=f"comma-separated, or 'all' ({', '.join(available_models())})"
  )
  p.add_argument(
    "--frameworks",
    default="jax,torch",
    help="jax, torch or both; jax.unguarded: jax without the non-finite guard",
  )
  p.add_argument("--preset", default="", help="config preset for every model ('' = seed size)")
  p.add_argument(
    "--override",
    action="append",
    default=[],
    metavar="KEY=VALUE",
    help="config override for every model, e.g. model.latent_dim=32 (repeatable)",
  )
  p.add_argument("--shape", default="", help="input shape: NxF for spectrograms, T for tokens")
  p.add_argument("--batch-size", type=int, default=0, help="0: the config's train.batch_size")
  p.add_argument(
    "--dtype",
    default="",
    choices=("", "float32", "bfloat16", "float16"),
    help="compute dtype ('' = the config's)",
  )
  p.add_argument(
    "--devices",
    type=int,
    default=0,
    help="JAX devices in the data-parallel mesh (0 = all visible); on CPU N > 1 "
    "splits the host into N XLA devices. Torch always uses one device.",
  )
  p.add_argument("--steps", type=int, default=10, help="timed steps per run")
  p.add_argument("--warmup", type=int, default=1, help="untimed steps after the first")
  p.add_argument("--repeats", type=int, default=1, help="timed runs; the best is reported")
  p.add_argument(
    "--pipeline-steps",
    type=int,
    default=-1,
    help="steps of the Grain-fed loop (-1 = --steps, 0 = skip it)",
  )
  p.add_argument(
    "--torch-compile",
    action="store_true",
    help="also time the torch reference under torch.compile (a separate record)",
  )
  p.add_argument(
    "--threads",
    default="0",
    help="torch threads, or a comma-separated list to time each (0 = os.cpu_count())",
  )
  p.add_argument(
    "--peak-tflops",
    type=float,
    default=0.0,
    help="the device's peak dense TFLOP/s for MFU (0: a table of known GPUs "
    "for bfloat16/float32; none for CPUs)",
  )
  p.add_argument(
    "--generate-tokens",
    type=int,
    default=0,
    help="token models: also time KV-cached sampling of this many tokens",
  )
  p.add_argument("--profile", action="store_true", help="add the top ops of the step")
  p.add_argument("--profile-steps", type=int, default=3, help="steps traced by --profile")
  p.add_argument("--trace-dir", default="", help="keep the --profile traces here")
  p.add_argument("--no-isolate", action="store_true", help="run every record in this process")
  p.add_argument("--timeout", type=float, default=3600.0, help="seconds per isolated record")
  p.add_argument("--json", default="", help="write the records here")
  p.add_argument("--job", default="", help=argparse.SUPPRESS)  # internal: model:framework
  p.add_argument("--job-out", default="", help=argparse.SUPPRESS)
  return p.parse_args(argv)


def available_models() -> list[str]:
  names = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))}
  return sorted(names - {"__init__"})


def selected_models(args) -> list[str]:
  if args.models == "all":
    return available_models()
  return [m.strip() for m in args.models.split(",") if m.strip()]


def thread_counts(args) -> list[int]:
  """Torch thread counts to time (0 means os.cpu_count())."""
  try:
    counts = [int(t) for t in args.threads.split(",") if t.strip()]
  except ValueError:
    raise SystemExit(
      f"error: --threads {args.threads!r}: expected integers, e.g. 2 or 1,2"
    ) from None
  return [t or os.cpu_count() for t in counts] or [os.cpu_count()]


def jobs(args) -> list[tuple[str, str, int]]:
  """(model, framework, torch threads) in run order; 'torch.compile' counts as a framework."""
  frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
  unknown = set(frameworks) - {"jax", "jax.unguarded", "torch"}
  if unknown:
    raise SystemExit(
      f"error: --frameworks: unknown {', '.join(sorted(unknown))}; "
      "expected jax, jax.unguarded and/or torch"
    )
  if args.torch_compile and "torch" in frameworks:
    frameworks.append("torch.compile")
  out = []
  for model in selected_models(args):
    for framework in frameworks:
      counts = [0] if framework.startswith("jax") else thread_counts(args)
      out += [(model, framework, threads) for threads in counts]
  return out


# ---------------------------------------------------------------------------------------------
# Configs and synthetic data (no framework imported here)
# ---------------------------------------------------------------------------------------------


class Skip(Exception):
  """This record cannot be measured; the message says why."""


def overrides(args) -> dict[str, str]:
  out = {}
  for item in args.override:
    key, sep, value = item.partition("=")
    if not sep:
      raise SystemExit(f"error: --override {item!r}: expected KEY=VALUE")
    out[key.strip()] = value.strip()
  if args.batch_size:
    out["train.batch_size"] = str(args.batch_size)
  if args.dtype:
    out["dtype"] = args.dtype
  if args.devices:
    out["train.num_devices"] = str(args.devices)
  return out


def load_config(model: str, args):
  """The model's locked config: `configs/<model>.py[:preset]` plus the overrides."""
  from jaxvae.variants import registry

  path = os.path.join(ROOT, "configs", f"{ALIASES.get(model, model)}.py")
  if not os.path.exists(path):
    raise Skip(f"no config file configs/{ALIASES.get(model, model)}.py")
  try:
    config = registry.load_config(
      path + (f":{args.preset}" if args.preset else ""), overrides(args)
    )
  except (errors.ConfigError, KeyError) as e:
    raise Skip(f"config: {e}") from None
  if is_token_model(config) and not config.model.get("vocab_size"):
    with config.unlocked():  # the torch reference reads it too
      config.model.vocab_size = vocab_size(config)
  return config


def vocab_size(config) -> int:
  """A token model's vocabulary: `model.vocab_size`, or (0) the config's tokenizer's, since the
  models here get no data (untrained: its base vocabulary, or the learned size it asks for)."""
  if int(config.model.get("vocab_size", 0)):
    return int(config.model.vocab_size)
  from jaxvae.symbolic import tokenizers

  return tokenizers.from_config(config.data.midi).planned_vocab_size


def is_token_model(config) -> bool:
  """MIDI configs train on event-token windows, the rest on spectrograms."""
  return config.data.get("kind", "audio") == "midi"


def input_shape(config, shape_arg: str = "") -> tuple[int, ...]:
  """(n_mels, frames) the feature store would hold for this config, or (seq_len,) for tokens.

  Frames are centered STFT frames: 1 + floor(samples / hop) (128 x 1292 for 30 s at
  22,050 Hz, hop 512; 128 x 32 for 1 s at 16 kHz, hop 512).
  """
  if shape_arg:
    try:
      return tuple(int(v) for v in shape_arg.lower().split("x"))
    except ValueError:
      raise SystemExit(f"error: --shape {shape_arg!r}: expected NxF or T") from None
  d = config.data
  if is_token_model(config):
    return (int(d.midi.seq_len),)
  n = d.n_mfcc if d.feature == "mfcc" else d.n_mels
  return (int(n), 1 + int(d.sr * d.seconds) // int(d.hop_length))


def labels(config) -> dict[str, tuple[str, ...]]:
  """Label vocabularies for the DataSpec: the seed-000 columns plus a conditioning label."""
  names = dict(LABELS)
  cond = config.model.get("cond_label", "")
  if cond:
    names.setdefault(cond, 4)
  return {name: tuple(f"{name}_{i}" for i in range(n)) for name, n in names.items()}


def data_spec(config, shape):
  from jaxvae.data.spec import DataSpec

  if is_token_model(config):
    return DataSpec(input_shape=tuple(shape))
  # A store has lyrics embeddings only when the config names them; models with lyrics
  # settings (the multimodal VAE) need them, so they get random ones of the seed's width.
  wants_lyrics = config.data.lyrics_embeddings or any(
    k.startswith("lyrics") for k in config.model.keys()
  )
  lyrics_dim = LYRICS_DIM if wants_lyrics else 0
  return DataSpec(input_shape=tuple(shape), labels=labels(config), lyrics_dim=lyrics_dim)


def synthetic_examples(config, spec, n: int, seed: int = 0) -> dict[str, np.ndarray]:
  """`n` examples as a batch dict (docs/ARCHITECTURE.md), content irrelevant to speed."""
  rng = np.random.default_rng(seed)
  ones = np.ones((n,), np.float32)
  if is_token_model(config):
    tokens = rng.integers(FIRST_EVENT, vocab_size(config), (n, *spec.input_shape))
    tokens = tokens.astype(np.int32)
    return {"tokens": tokens, "mask": ones}
  shape = (n, *spec.input_shape)
  if config.data.normalize == "minmax":
    x = rng.uniform(0.0, 1.0, shape)
  else:
    x = rng.standard_normal(shape)
  out = {"x": x.astype(np.float32), "mask": ones}
  for name, values in spec.labels.items():
    out[f"label_{name}"] = rng.integers(0, len(values), (n,)).astype(np.int32)
  if spec.lyrics_dim:
    out["lyrics"] = rng.standard_normal((n, spec.lyrics_dim)).astype(np.float32)
    out["lyrics_mask"] = ones
  return out


class ArraySource:
  """Random access to rows of in-memory arrays as example dicts (a Grain data source), the
  same per-example contract as `jaxvae.data.pipeline.Examples`."""

  def __init__(self, arrays: dict[str, np.ndarray]):
    self.arrays = arrays

  def __len__(self) -> int:
    return len(next(iter(self.arrays.values())))

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    return {k: v[i] for k, v in self.arrays.items()}


def first_batch(examples: dict[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
  return {k: v[:batch_size] for k, v in examples.items()}


# ---------------------------------------------------------------------------------------------
# Timing (the same code times both frameworks)
# ---------------------------------------------------------------------------------------------


def now() -> float:
  return time.perf_counter()


def peak_rss_bytes() -> int:
  return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux: KiB


def timed_steps(stepper, batch, steps: int) -> float:
  """Seconds for `steps` steps, synchronized once at the end."""
  start = now()
  for _ in range(steps):
    stepper.step(batch)
  stepper.sync()
  return now() - start


def pipeline_loop(stepper, source: ArraySource, config, batch_size: int, steps: int) -> dict:
  """Steps fed by the trainer's Grain iterator; how long next() blocks, and the transfers."""
  from jaxvae.data import pipeline

  iterator = pipeline.train_iterator(source, batch_size, config.seed, config)
  stepper.step(stepper.put(next(iterator)))  # starts Grain's threads and fills its buffer
  stepper.sync()
  wait = put = 0.0
  start = now()
  for _ in range(steps):
    t0 = now()
    host = next(iterator)
    t1 = now()
    batch = stepper.put(host)
    t2 = now()
    stepper.step(batch)
    wait, put = wait + t1 - t0, put + t2 - t1
  stepper.sync()
  total = now() - start
  return {
    "input_wait_frac": wait / total,
    "put_frac": put / total,
    "pipeline_samples_per_s": steps * batch_size / total,
  }


def measure(stepper, examples, config, args) -> dict:
  """compile_s, samples_per_s (best of --repeats) and the Grain-fed loop of one stepper."""
  b = stepper.batch_size
  batch = stepper.put(first_batch(examples, b))
  start = now()
  stepper.step(batch)
  stepper.sync()
  out = {"compile_s": now() - start}
  for _ in range(args.warmup):
    stepper.step(batch)
  stepper.sync()
  runs = [
    args.steps * b / timed_steps(stepper, batch, args.steps) for _ in range(max(1, args.repeats))
  ]
  out.update(samples_per_s=max(runs), samples_per_s_runs=runs, step_ms=1e3 * b / max(runs))
  n = args.steps if args.pipeline_steps < 0 else args.pipeline_steps
  if n:
    out.update(pipeline_loop(stepper, ArraySource(examples), config, b, n))
  if args.profile:
    out["profile"] = stepper.profile(batch, max(1, args.profile_steps), args.trace_dir)
  out.update(stepper.memory())
  return out


# ---------------------------------------------------------------------------------------------
# JAX
# ---------------------------------------------------------------------------------------------


class JaxStepper:
  """`builder.build` of a config: the trainer's own jitted, sharded, donating train_step."""

  def __init__(self, config, spec, examples):
    import jax

    from jaxvae.training import builder

    self.jax = jax
    self.batch_size = int(config.train.batch_size)
    start = now()
    self.example_batch = first_batch(examples, self.batch_size)
    self.compiled = builder.build(
      config, spec, self.example_batch, steps_per_epoch=100, total_steps=10_000
    )
    self.build_s = now() - start
    self.state = self.compiled.state
    self.params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(self.state.params))
    self.num_devices = int(self.compiled.mesh.devices.size)
    dev = jax.devices()[0]
    self.device = "cpu" if dev.platform == "cpu" else f"{dev.platform}:{dev.device_kind}"

  def put(self, host: dict) -> dict:
    put = self.jax.make_array_from_process_local_data
    return {k: put(self.compiled.batch_sharding, np.asarray(v)) for k, v in host.items()}

  def step(self, batch) -> None:
    self.state, _ = self.compiled.train_step(self.state, batch)

  def sync(self) -> None:
    self.jax.block_until_ready(self.state)

  def memory(self) -> dict:
    stats = self.jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
      return {"peak_mem_bytes": int(stats["peak_bytes_in_use"]), "peak_mem_kind": "device"}
    return {"peak_mem_bytes": peak_rss_bytes(), "peak_mem_kind": "host_rss"}

  def profile(self, batch, steps: int, trace_dir: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
      path = trace_dir or tmp
      self.jax.profiler.start_trace(path)
      for _ in range(steps):
        self.step(batch)
      self.sync()
      self.jax.profiler.stop_trace()
      out = summarize_xplane(newest_xplane(path), steps)
    compiled = self.compiled.train_step.lower(self.state, batch).compile()
    out["top_parts"] = parts_table(out.pop("_op_ns"), compiled.as_text() or "", steps)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    if cost and "flops" in cost:
      out["gflop_per_step"] = float(cost["flops"]) / 1e9
    return out


def newest_xplane(path: str) -> str:
  files = sorted(
    glob.glob(os.path.join(path, "**", "*.xplane.pb"), recursive=True), key=os.path.getmtime
  )
  if not files:
    raise RuntimeError(f"jax.profiler wrote no trace under {path}")
  return files[-1]


def _xla_op_events(planes):
  """(name, ns) of every XLA op: GPU 'XLA Ops' lines, else the CPU thunk thread pools."""
  planes = list(planes)  # ProfileData.planes is a one-shot iterator
  device = [p for p in planes if p.name.startswith("/device:")]
  for plane in device or planes:
    for line in plane.lines:
      if (device and line.name == "XLA Ops") or (not device and line.name.startswith("tf_XLA")):
        for event in line.events:
          if not event.name.startswith(("ThunkExecutor", "ThreadpoolListener", "end: ")):
            yield event.name, event.duration_ns


def summarize_xplane(path: str, steps: int, top: int = 8) -> dict:
  """Top ops and op kinds by summed time (CPU: summed over the XLA threads, so op time,
  not wall time)."""
  from jax.profiler import ProfileData

  ops, kinds = collections.Counter(), collections.Counter()
  for name, ns in _xla_op_events(ProfileData.from_file(path).planes):
    ops[name] += ns
    kinds[re.sub(r"\.\d+$", "", name)] += ns
  return dict(_top_tables(ops, kinds, steps, top), _op_ns=ops)


def model_part(op_name: str) -> str:
  """'fwd' or 'bwd' and the module an XLA op came from, by its `op_name` metadata: the jit
  and jvp wrappers dropped with their names (the model's is jvp's), transpose(...) read as
  the backward pass, the path cut after its last module ('Conv_1', 'blocks_3',
  'Foo.method'), so the ops inside one (dot_general, slice, reduce_sum, ...) add up to a row.
  Ops outside the model's forward and backward (the loss's reductions, the optimizer) count
  as 'fwd' under their own names."""
  side = "bwd" if "transpose(jvp(" in op_name else "fwd"
  path = re.sub(r"transpose\(|\)", "/", re.sub(r"(jit|jvp)\([^()/]*\)", "", op_name))
  path = [p for p in path.split("/") if p]
  modules = [i for i, p in enumerate(path) if re.search(r"[A-Z.]|_\d+$", p)]
  return f"{side} " + ("/".join(path[: modules[-1] + 1] if modules else path[:1]) or "?")


def parts_table(op_ns: dict, hlo_text: str, steps: int, top: int = 12) -> list:
  """Per-step milliseconds and shares of the `top` model parts (`model_part`), each op's time
  given to the `op_name` of its instruction in the optimized HLO (XLA gives a fusion its
  root's); the ops XLA made itself (layout copies, rewritten convolutions) have none and
  share a row."""
  names = dict(
    re.findall(r"^\s*(?:ROOT )?%?([\w.\-]+) = [^\n]*?op_name=\"([^\"]*)\"", hlo_text, re.M)
  )
  parts = collections.Counter()
  for op, ns in op_ns.items():
    parts[model_part(names[op]) if op in names else "no op_name (XLA's layout copies, ...)"] += ns
  total = sum(parts.values()) or 1
  return [[p, round(ns / 1e6 / steps, 3), round(ns / total, 4)] for p, ns in parts.most_common(top)]


def _top_tables(ops, kinds, steps: int, top: int) -> dict:
  """Per-step milliseconds and shares of the `top` ops and op kinds (kinds may be None)."""
  total = sum(ops.values()) or 1
  row = lambda name, ns: [name, round(ns / 1e6 / steps, 3), round(ns / total, 4)]
  return {
    "op_ms_per_step": round(total / 1e6 / steps, 3),
    "top_ops": [row(n, v) for n, v in ops.most_common(top)],
    "top_kinds": [row(n, v) for n, v in kinds.most_common(top)] if kinds else [],
  }


def run_jax(model: str, args, guarded: bool = True) -> dict:
  """`guarded=False` (framework 'jax.unguarded') builds the steps without the trainer's
  non-finite guard (`step_lib.skip_nonfinite`), to measure what the guard costs."""
  from unittest import mock

  from jaxvae.training import step as step_lib
  from jaxvae.variants import registry

  config = load_config(model, args)
  if config.model.name not in registry.names():
    raise Skip(f"registry has no variant '{config.model.name}'")
  shape = input_shape(config, args.shape)
  spec = data_spec(config, shape)
  examples = synthetic_examples(config, spec, pool_size(config))
  try:
    with mock.patch.object(
      step_lib, "skip_nonfinite", step_lib.skip_nonfinite if guarded else lambda step: step
    ):
      stepper = JaxStepper(config, spec, examples)
  except Exception as e:  # a variant that cannot build from synthetic data is reported
    raise Skip(f"builder.build failed: {type(e).__name__}: {e}") from None
  rec = measure(stepper, examples, config, args)
  rec.update(flops_record(stepper, config, shape, rec["samples_per_s"], args))
  if args.generate_tokens and is_token_model(config):
    rec.update(generation_record(stepper, args.generate_tokens))
  import jax

  return dict(
    rec,
    **base_record(model, "jax", config, shape, stepper),
    mode="jax" if guarded else "jax.unguarded",
    build_s=stepper.build_s,
    framework_version=jax.__version__,
  )


# Peak dense TFLOP/s per device (NVIDIA datasheets, SXM parts; float32 means TF32 tensor
# cores, which XLA uses for float32 matmuls at default precision).
PEAK_TFLOPS = {
  "H100": {"bfloat16": 989.0, "float16": 989.0, "float32": 494.0},
  "H200": {"bfloat16": 989.0, "float16": 989.0, "float32": 494.0},
  "A100": {"bfloat16": 312.0, "float16": 312.0, "float32": 156.0},
}


def peak_tflops(device: str, dtype: str, override: float) -> float | None:
  if override:
    return override
  for name, peaks in PEAK_TFLOPS.items():
    if name in device:
      return peaks.get(dtype)
  return None


def transformer_model_flops(config, seq_len: int) -> float:
  """Training FLOPs per token of the causal LM, the PaLM / MaxText way: 6 x (non-embedding
  parameters, plus the tied output projection) + 12 x layers x d_model x attended keys, where a
  causal token attends to (T + 1) / 2 keys on average, at most `window` (sliding), or that plus
  the global keys before its window (hierarchical)."""
  m = config.model
  d, layers, ff, vocab = int(m.d_model), int(m.num_layers), int(m.d_ff), vocab_size(config)
  per_layer = 4 * d * d + 2 * d * ff
  keys = (seq_len + 1) / 2
  if m.attention in ("sliding", "hierarchical"):
    keys = min(keys, int(m.window))
  if m.attention == "hierarchical":  # + the strided global keys outside the window, on average
    keys += max(0, seq_len - int(m.window)) ** 2 / (2 * seq_len * int(m.global_stride))
  return 6.0 * (layers * per_layer + d * vocab) + 12.0 * layers * d * keys


def flops_record(stepper, config, shape, samples_per_s: float, args) -> dict:
  """XLA's FLOP count of one train step (what the hardware executes) and, for the stage-1
  transformer, the model FLOPs behind MFU; utilization where the device's peak is known."""
  out = {}
  try:
    cost = stepper.compiled.train_step.lower(
      stepper.state, stepper.put(stepper.example_batch)
    ).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    if cost and cost.get("flops"):
      out["xla_flops_per_step"] = float(cost["flops"])
  except Exception as e:  # cost analysis is best effort; it never fails a benchmark
    out["flops_error"] = f"{type(e).__name__}: {e}"
  steps_per_s = samples_per_s / stepper.batch_size
  peak = peak_tflops(stepper.device, config.dtype, args.peak_tflops)
  if "xla_flops_per_step" in out:
    out["xla_tflops_per_s"] = out["xla_flops_per_step"] * steps_per_s / 1e12
  if is_token_model(config) and int(config.get("stage", 1)) == 1:
    seq = int(shape[-1])
    model_flops = transformer_model_flops(config, seq) * seq * stepper.batch_size
    out["model_flops_per_step"] = model_flops
    out["model_tflops_per_s"] = model_flops * steps_per_s / 1e12
  if peak:
    per_device = peak * stepper.num_devices
    out["peak_tflops"] = per_device
    if "model_tflops_per_s" in out:
      out["mfu"] = out["model_tflops_per_s"] / per_device
    if "xla_tflops_per_s" in out:
      out["hfu"] = out["xla_tflops_per_s"] / per_device
  return out


def generation_record(stepper, num_tokens: int) -> dict:
  """Tokens/s of the KV-cached sampler (jaxvae.sampling.tokens.generate) at the train
  batch size: compile excluded, the best of two timed runs."""
  import jax

  from jaxvae.sampling import tokens as token_sampling

  model, params = stepper.compiled.model, {"params": stepper.state.params}
  num_tokens = min(num_tokens, int(model.cfg.max_len) - 1)
  run = lambda seed: jax.block_until_ready(
    token_sampling.generate(
      model,
      params,
      jax.random.PRNGKey(seed),
      num_tokens=num_tokens,
      batch_size=stepper.batch_size,
      top_p=0.95,
    )
  )
  return timed_generation(run, num_tokens, stepper.batch_size)


def timed_generation(run, num_tokens: int, batch_size: int) -> dict:
  """`run(seed)` once (compile, warm-up) then twice timed: the generate_* fields."""
  start = now()
  run(0)
  compile_s = now() - start
  times = []
  for seed in (1, 2):
    start = now()
    run(seed)
    times.append(now() - start)
  return {
    "generate_tokens": num_tokens,
    "generate_compile_s": compile_s,
    "generate_tokens_per_s": num_tokens * batch_size / min(times),
  }


def torch_generation_record(stepper, config, num_tokens: int) -> dict:
  """Tokens/s of the torch reference's KV-cached sampler (`torch_ref.transformer.generate`:
  the same nucleus, top_p 0.95) at the train batch size, as `generation_record` times JAX's."""
  from benchmarks.torch_ref import transformer as torch_transformer

  num_tokens = min(num_tokens, int(config.model.max_len) - 1)

  def run(seed):
    stepper.torch.manual_seed(seed)
    torch_transformer.generate(stepper.model, num_tokens, stepper.batch_size, top_p=0.95)
    stepper.sync()

  rec = timed_generation(run, num_tokens, stepper.batch_size)
  stepper.model.train()
  return rec


def pool_size(config) -> int:
  """Examples in the in-memory source: a few batches, so the Grain loop crosses epochs."""
  return 4 * int(config.train.batch_size)


# ---------------------------------------------------------------------------------------------
# PyTorch
# ---------------------------------------------------------------------------------------------


class TorchStepper:
  """The torch reference with the config's optimizer: zero_grad, loss, backward, clip, step."""

  def __init__(self, config, shape, threads: int, compile_model: bool):
    import torch

    from benchmarks import torch_ref

    self.torch = torch
    torch.set_num_threads(threads)
    torch.manual_seed(config.seed)
    self.batch_size = int(config.train.batch_size)
    self.num_devices = 1
    self.cuda = torch.cuda.is_available()
    self.dev = torch.device("cuda" if self.cuda else "cpu")
    self.device = f"gpu:{torch.cuda.get_device_name()}" if self.cuda else "cpu"
    model, self.loss_fn = torch_ref.build(config, shape)
    self.params = torch_ref.param_count(model)
    self.model = model.to(self.dev).train()
    self.opt = torch_optimizer(torch, self.model.parameters(), config)
    self.clip = float(config.train.clip_norm)
    self.dtype = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[
      config.dtype
    ]
    self.scaler = torch.amp.GradScaler(self.dev.type) if config.dtype == "float16" else None
    if compile_model:
      self.model = torch.compile(self.model)

  def put(self, host: dict) -> dict:
    out = {}
    for k in ("x", "tokens"):
      if k in host:
        t = self.torch.from_numpy(np.asarray(host[k]))
        out[k] = (t.long() if k == "tokens" else t).to(self.dev, non_blocking=True)
    return out

  def step(self, batch) -> None:
    torch = self.torch
    self.opt.zero_grad(set_to_none=True)
    with torch.autocast(self.dev.type, dtype=self.dtype, enabled=self.dtype is not None):
      loss = self.loss_fn(self.model, batch)
    if self.scaler is not None:
      self.scaler.scale(loss).backward()
      self.scaler.unscale_(self.opt)
    else:
      loss.backward()
    if self.clip > 0:
      torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
    if self.scaler is not None:
      self.scaler.step(self.opt)
      self.scaler.update()
    else:
      self.opt.step()

  def sync(self) -> None:
    if self.cuda:
      self.torch.cuda.synchronize()

  def memory(self) -> dict:
    if self.cuda:
      return {
        "peak_mem_bytes": int(self.torch.cuda.max_memory_allocated()),
        "peak_mem_kind": "device",
      }
    return {"peak_mem_bytes": peak_rss_bytes(), "peak_mem_kind": "host_rss"}

  def profile(self, batch, steps: int, trace_dir: str) -> dict:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
    with profile(activities=activities) as prof:
      for _ in range(steps):
        self.step(batch)
      self.sync()
    if trace_dir:
      os.makedirs(trace_dir, exist_ok=True)
      prof.export_chrome_trace(os.path.join(trace_dir, f"torch_{os.getpid()}.json"))
    attr = "self_device_time_total" if self.cuda else "self_cpu_time_total"
    ops = collections.Counter()
    for e in prof.key_averages():
      ns = 1e3 * getattr(e, attr)  # microseconds -> ns
      if ns > 0:
        ops[e.key] += ns
    return _top_tables(ops, None, steps, 8)


def torch_optimizer(torch, params, config):
  """The torch counterpart of `jaxvae.training.optim.optimizer` (constant learning rate)."""
  t = config.train
  if t.lr_schedule != "constant" or t.warmup_steps:
    print(
      f"note: torch reference uses a constant lr {t.lr} (config schedule "
      f"{t.lr_schedule!r} does not change the step's cost)",
      file=sys.stderr,
    )
  if t.optimizer == "adamw":
    return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
  if t.optimizer == "sgd":
    return torch.optim.SGD(params, lr=t.lr, momentum=0.9)
  return torch.optim.Adam(params, lr=t.lr, eps=1e-8)


def run_torch(model: str, args, compile_model: bool, threads: int) -> dict:
  try:
    import torch

    from benchmarks import torch_ref
  except ImportError as e:
    raise Skip(f"torch is not installed ({e}); pip install -e '.[bench]'") from None
  config = load_config(model, args)
  if not torch_ref.supports(config.model.name):
    raise Skip(f"no torch reference for model '{config.model.name}'")
  shape = input_shape(config, args.shape)
  spec = data_spec(config, shape)
  examples = synthetic_examples(config, spec, pool_size(config))
  try:
    stepper = TorchStepper(config, shape, threads, compile_model)
  except NotImplementedError as e:
    raise Skip(str(e)) from None
  try:
    rec = measure(stepper, examples, config, args)
  except Exception as e:  # torch.compile needs a working C++ toolchain; say so, go on
    if not compile_model:
      raise
    raise Skip(f"torch.compile failed: {type(e).__name__}: {str(e)[:300]}") from None
  if args.generate_tokens and is_token_model(config) and not compile_model:
    rec.update(torch_generation_record(stepper, config, args.generate_tokens))
  name = ("torch.compile" if compile_model else "torch") + f" t{torch.get_num_threads()}"
  return dict(
    rec,
    **base_record(model, "torch", config, shape, stepper),
    torch_compile=compile_model,
    mode=name,
    framework_version=torch.__version__,
    threads=torch.get_num_threads(),
  )


# ---------------------------------------------------------------------------------------------
# Records and jobs
# ---------------------------------------------------------------------------------------------


def base_record(model, framework, config, shape, stepper) -> dict:
  tokens = int(shape[-1]) if is_token_model(config) else 0
  return {
    "model": model,
    "framework": framework,
    "device": stepper.device,
    "num_devices": stepper.num_devices,
    "dtype": config.dtype,
    "batch_size": stepper.batch_size,
    "input_shape": list(shape),
    "params": stepper.params,
    "seq_len": tokens,
  }


def finish_record(rec: dict) -> dict:
  """Adds tokens_per_s and the host description every record carries."""
  if rec.get("seq_len") and rec.get("samples_per_s"):
    rec["tokens_per_s"] = rec["samples_per_s"] * rec["seq_len"]
  return rec | host_info()


def host_info() -> dict:
  return {
    "host_cpu": cpu_model(),
    "cpu_count": os.cpu_count(),
    "date": datetime.date.today().isoformat(),
    "python": platform.python_version(),
  }


def cpu_model() -> str:
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
      if line.startswith("Model name:"):
        return line.split(":", 1)[1].strip()
  except (OSError, subprocess.CalledProcessError):
    pass
  return platform.processor() or "unknown"


def job_name(framework: str, threads: int) -> str:
  return framework if framework.startswith("jax") else f"{framework} t{threads}"


def skipped(model: str, framework: str, threads: int, reason: str) -> dict:
  return {
    "model": model,
    "framework": framework.split(".")[0],
    "mode": job_name(framework, threads),
    "skipped": reason,
    "device": None,
    "dtype": None,
    "batch_size": None,
    "samples_per_s": None,
    "compile_s": None,
  }


def run_job(model: str, framework: str, threads: int, args) -> dict:
  """One record, in this process; a Skip becomes a skipped record."""
  try:
    if framework.startswith("jax"):
      rec = run_jax(model, args, guarded=framework == "jax")
    else:
      rec = run_torch(model, args, framework == "torch.compile", threads)
  except Skip as e:
    return skipped(model, framework, threads, str(e))
  return finish_record(rec)


def run_isolated(model: str, framework: str, threads: int, args, argv: list[str]) -> dict:
  """One record in a fresh interpreter (own peak RSS, own thread pools)."""
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "record.json")
    cmd = [
      sys.executable,
      os.path.abspath(__file__),
      *argv,
      "--job",
      f"{model}:{framework}:{threads}",
      "--job-out",
      out,
    ]
    try:
      proc = subprocess.run(
        cmd, env=child_env(args), capture_output=True, text=True, timeout=args.timeout, check=False
      )
    except subprocess.TimeoutExpired:
      return skipped(model, framework, threads, f"timed out after {args.timeout:.0f} s")
    if proc.returncode or not os.path.exists(out):
      tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
      return skipped(model, framework, threads, f"subprocess failed (rc {proc.returncode}): {tail}")
    with open(out, encoding="utf-8") as f:
      return json.load(f)


def child_env(args) -> dict:
  env = dict(os.environ)
  if args.devices > 1:
    env["XLA_FLAGS"] = (
      env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={args.devices}"
    ).strip()
  return env


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

COLUMNS = (
  "model",
  "framework",
  "device",
  "dtype",
  "batch",
  "samples/s",
  "tokens/s",
  "compile_s",
  "peak_mem",
  "input_wait",
)


def _fmt(value, spec: str) -> str:
  return "-" if value is None else format(value, spec)


def table(records: list[dict]) -> str:
  rows = [COLUMNS]
  for r in records:
    if r.get("skipped"):
      continue
    mem = r.get("peak_mem_bytes")
    mem = f"{mem / 2**20:.0f} MiB {'rss' if r['peak_mem_kind'] == 'host_rss' else 'dev'}"
    rows.append(
      (
        r["model"],
        r.get("mode", "jax"),
        f"{r['device']} x{r['num_devices']}",
        r["dtype"],
        str(r["batch_size"]),
        _fmt(r["samples_per_s"], ".2f"),
        _fmt(r.get("tokens_per_s"), ".0f"),
        _fmt(r["compile_s"], ".2f"),
        mem,
        _fmt(r.get("input_wait_frac"), ".3f"),
      )
    )
  widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
  lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
  lines.insert(1, "  ".join("-" * w for w in widths))
  return "\n".join(lines)


def ratios(records: list[dict]) -> list[str]:
  """'model: jax/torch = X.XX' for every model measured by both (eager, and compiled)."""
  done = [r for r in records if not r.get("skipped")]
  out = []
  for j in (r for r in done if r.get("mode") == "jax"):
    for u in (r for r in done if r.get("mode") == "jax.unguarded" and r["model"] == j["model"]):
      out.append(
        f"{j['model']}: jax/jax.unguarded = "
        f"{j['samples_per_s'] / u['samples_per_s']:.3f}  (the non-finite guard's cost)"
      )
    for t in (r for r in done if r["framework"] == "torch" and r["model"] == j["model"]):
      out.append(
        f"{j['model']}: jax/{t['mode']} = {j['samples_per_s'] / t['samples_per_s']:.2f}"
        f"  (compile {j['compile_s']:.2f} s vs {t['compile_s']:.2f} s)"
      )
      if "generate_tokens_per_s" in j and "generate_tokens_per_s" in t:
        out.append(
          f"{j['model']}: sampling jax/{t['mode']} = "
          f"{j['generate_tokens_per_s'] / t['generate_tokens_per_s']:.2f}  "
          f"({j['generate_tokens_per_s']:.0f} vs {t['generate_tokens_per_s']:.0f} tokens/s, "
          "KV-cached)"
        )
  return out


def efficiency_lines(records: list[dict]) -> list[str]:
  """Achieved TFLOP/s (XLA's count; the transformer's model FLOPs), MFU where the device's
  peak is known, and sampling speed."""
  out = []
  for r in records:
    if r.get("skipped") or r["framework"] != "jax":
      continue
    parts = []
    if "xla_tflops_per_s" in r:
      parts.append(
        f"{r['xla_flops_per_step'] / 1e9:.1f} GFLOP/step (XLA), "
        f"{r['xla_tflops_per_s'] * 1e3:.1f} GFLOP/s"
      )
    if "model_tflops_per_s" in r:
      parts.append(f"model {r['model_tflops_per_s'] * 1e3:.1f} GFLOP/s")
    if "mfu" in r:
      parts.append(f"MFU {100 * r['mfu']:.1f} % of {r['peak_tflops']:g} TFLOP/s")
    if "generate_tokens_per_s" in r:
      parts.append(
        f"sampling {r['generate_tokens_per_s']:.0f} tokens/s "
        f"({r['generate_tokens']} tokens x batch {r['batch_size']})"
      )
    if parts:
      out.append(f"{r['model']} ({r['dtype']}): " + "; ".join(parts))
  return out


def seed004_line(records: list[dict]) -> list[str]:
  """The seed-004 run (5 epochs x 50,000 clips in 54 min) at the measured JAX step rate."""
  out = []
  for r in records:
    if (
      not r.get("skipped")
      and r["model"] == "puzzle_vqvae"
      and r["framework"] == "jax"
      and r["input_shape"] == [128, 32]
    ):
      minutes = 5 * 50_000 / r["samples_per_s"] / 60
      out.append(
        f"puzzle_vqvae: 5 epochs x 50,000 clips at {r['samples_per_s']:.0f} samples/s "
        f"(batch {r['batch_size']}) = {minutes:.1f} min of train steps "
        "(seed 004: 54 min)"
      )
  return out


def profile_lines(records: list[dict]) -> list[str]:
  out = []
  for r in records:
    prof = r.get("profile")
    if not prof:
      continue
    # JAX on CPU: op time summed over XLA's threads; torch: self time of each aten op.
    kind = "XLA op time" if r["framework"] == "jax" else "torch self time"
    head = (
      f"profile {r['model']} / {r.get('mode', r['framework'])}: "
      f"{prof['op_ms_per_step']:.1f} ms {kind} per step"
    )
    if "gflop_per_step" in prof:
      achieved = prof["gflop_per_step"] * r["samples_per_s"] / r["batch_size"]
      head += f", {prof['gflop_per_step']:.2f} GFLOP/step -> {achieved:.1f} GFLOP/s achieved"
    out.append(head)
    for name, ms, share in prof["top_kinds"] or prof["top_ops"]:
      out.append(f"    {share:6.1%}  {ms:9.2f} ms  {name}")
    if prof.get("top_parts"):
      out.append("  by model part (forward / backward):")
      for name, ms, share in prof["top_parts"]:
        out.append(f"    {share:6.1%}  {ms:9.2f} ms  {name}")
  return out


def report(records: list[dict]) -> str:
  parts = [table(records)]
  notes = [
    f"skipped {r['model']} / {r.get('mode', r['framework'])}: {r['skipped']}"
    for r in records
    if r.get("skipped")
  ]
  for block in (
    ratios(records),
    efficiency_lines(records),
    seed004_line(records),
    profile_lines(records),
    notes,
  ):
    if block:
      parts.append("\n".join(block))
  return "\n\n".join(parts)


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def _forwarded(argv: list[str]) -> list[str]:
  """The parent's arguments minus the ones only the parent uses."""
  out, skip = [], False
  for a in argv:
    if skip:
      skip = False
      continue
    if a in ("--json", "--job", "--job-out", "--timeout"):
      skip = True
      continue
    if a.startswith(("--json=", "--job=", "--job-out=", "--timeout=")):
      continue
    out.append(a)
  return out


def main(argv=None) -> list[dict]:
  argv = list(sys.argv[1:] if argv is None else argv)
  if "--wallclock" in argv:  # a whole training command's wall time: tools/wallclock.py
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import wallclock  # noqa: PLC0415 - the other tool, only for this flag

    return wallclock.main([a for a in argv if a != "--wallclock"])
  if "--wave" in argv:  # the waveform VAE's offline and streaming decode: tools/bench_wave.py
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_wave  # noqa: PLC0415 - the other tool, only for this flag

    return bench_wave.main([a for a in argv if a != "--wave"])
  if "--vocoder" in argv:  # the vocoder's generator beside vocos': tools/bench_vocoder.py
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_vocoder  # noqa: PLC0415 - the other tool, only for this flag

    return bench_vocoder.main([a for a in argv if a != "--vocoder"])
  args = parse_args(argv)
  if args.job:
    model, framework, threads = args.job.split(":")
    record = run_job(model, framework, int(threads), args)
    with open(args.job_out, "w", encoding="utf-8") as f:
      json.dump(record, f)
    return [record]
  if args.no_isolate and args.devices > 1 and "jax" not in sys.modules:
    os.environ.update({"XLA_FLAGS": child_env(args)["XLA_FLAGS"]})
  records = []
  for model, framework, threads in jobs(args):
    print(f"... {model} / {job_name(framework, threads)}", file=sys.stderr, flush=True)
    rec = (
      run_job(model, framework, threads, args)
      if args.no_isolate
      else run_isolated(model, framework, threads, args, _forwarded(argv))
    )
    records.append(rec)
  print(report(records))
  print(json.dumps(records))  # the same records, machine-readable, on the last line
  if args.json:
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(records, f, indent=1)
  return records


if __name__ == "__main__":
  main()
