"""`--mode=export`: the trained model as serialized `jax.export` artifacts (StableHLO, the
weights inside) with a polymorphic batch dimension, plus `export.json`, into `DIR/export/`.
They run in any process with jax and numpy, without jaxvae:

    import json, numpy as np, jax
    from jax import export
    meta = json.load(open("DIR/export/export.json"))
    enc = export.deserialize(open("DIR/export/encoder.jax_export", "rb").read())
    mu, logvar = enc.call(np.zeros((3, *meta["input_shape"]), np.float32))

What is exported, by family (each function's inputs and outputs are listed in
`export.json`'s `functions`):
- audio VAEs: `encoder(x) -> (mu, logvar)`, `decoder(z[, label]) -> x` (a conditional model's
  decoder takes the class id of `export.json`'s `condition_label`, -1 for none); the
  multimodal VAE's encoder also takes `lyrics [B, lyrics_dim]` and `lyrics_mask [B]` (0: no
  lyrics), and `lyrics_decoder(z) -> lyrics`. Inputs are normalized features: `export.json`
  has the feature settings and normalization statistics that make them from audio.
- the VQ-VAE: `encoder(x) -> codes` (int32), `decoder(codes) -> x`.
- the waveform VAE: `encoder(audio) -> mu`, `decoder(z) -> audio`, and for a causal model
  `stream_step(z [B, 1, latent], *state) -> (audio [B, hop], *state)`, one latent frame of
  a stream (`export.json`'s `stream.state`: the state's names, shapes and dtypes, zeros to
  start; `stream.latency_samples`), and `stream_encode_step(audio [B, hop], *state) -> (mu or
  codes [B, 1, ...], *state)`, the encoder's (`stream_encode`).
- the MIDI transformer: `step(tokens [B, 1][, z], *cache) -> (logits [B, vocab], *cache)`,
  one KV-cached decoding step (the cache starts as zeros of the shapes in `export.json`),
  and `sampler(prompt [B, 1][, z], key, temperature, top_p) -> tokens [B, length]`, the whole
  KV-cached nucleus/top-k sampling loop (`key`: a raw uint32[2] `jax.random.PRNGKey`);
  stages 2-3 add `encoder(tokens [B, seq_len]) -> (mu, logvar)`. `export.json`'s `tokenizer`
  is the run's vocabulary (kind, settings, a learned BPE/Unigram vocabulary; for MidiTok its
  own tokenizer file under `record.miditok`) and its fingerprint.

Exported for the platform of this process plus the CPU. With `--onnx` each function is also
converted to ONNX with jax2onnx (optional: `pip install onnx onnx-ir onnxruntime` and
`pip install --no-deps jax2onnx`) and checked with onnxruntime against JAX on a batch of 2;
a function that does not convert is named in `export.json` with the converter's reason, and
its StableHLO artifact works as always.
"""

from __future__ import annotations

import logging
import os

import jax
from jax import export as jax_export
import jax.numpy as jnp
import numpy as np

from jaxvae import api
from jaxvae import errors
from jaxvae import workdir as workdir_lib
from jaxvae.data import featurize
from jaxvae.data import normalize as normalize_lib
from jaxvae.models import vocoder as vocoder_model
from jaxvae.sampling import prior
from jaxvae.sampling import tokens as tokens_lib
from jaxvae.sampling import vocoder as vocoder_lib
from jaxvae.sampling import wave as wave_lib
from jaxvae.symbolic import tokenizers
from jaxvae.training import builder

FORMAT_VERSION = 2
ONNX_TOLERANCE = 1e-4  # max |ONNX - JAX| accepted for a converted function


def add_arguments(group) -> None:
  """The flags of `--mode=export` (`jaxvae.main` adds them to its parser)."""
  group.add_argument(
    "--onnx",
    action="store_true",
    help="also convert each function to ONNX (needs jax2onnx and onnxruntime)",
  )


def check_arguments(args, parser) -> None:
  del args, parser  # --onnx goes with anything export does


def run(config, workdir: str, args) -> int:
  # The run's own config (from the workdir) is what gets exported; the command line's
  # generate.vocoder adds a latent -> waveform function through that vocoder.
  model = api.load(workdir, vocoder=str(config.generate.get("vocoder", "")) or None)
  _check_outputs(model)
  out_dir = os.path.join(workdir, "export")
  os.makedirs(out_dir, exist_ok=True)
  meta = write(model, out_dir, onnx=bool(getattr(args, "onnx", False)))
  print(
    f"wrote {', '.join(meta['files'])} and export.json to {out_dir} "
    f"({meta['model']}, step {model.step}, batch dimension polymorphic)"
  )
  for name, result in meta.get("onnx", {}).items():
    if "error" in result:
      print(f"ONNX: {name} did not convert ({result['error']}); {name}.jax_export works")
  return 0


def _check_outputs(model) -> None:
  """A diverged model (finite parameters, non-finite outputs) is not exported: its encoder on
  an average input and its decoder at the prior's centre must be finite."""
  if isinstance(model, vocoder_lib.Vocoder):
    return  # its generator is checked finite on real features by --mode=eval and the tests
  if isinstance(model, wave_lib.WaveModel):
    z = model.encode(np.zeros((1, model.hop), np.float32))
    builder.require_finite((z, model.decode(z)), "outputs", model.step)
    return
  x = np.zeros((1, *model.spec.input_shape), np.float32)
  if isinstance(model, api.AudioModel):
    outputs = (*model.encode(x), model.decode(np.zeros((1, model.latent_dim), np.float32)))
  elif isinstance(model, api.VQModel):
    outputs = model.decode_codes(model.encode(x))
  else:
    return  # a MIDI model's sampler and encoder are checked by running them (tests)
  builder.require_finite(outputs, "outputs", model.step)


class Function:
  """One exported function: arrays in, arrays out, with its inputs' abstract shapes (the
  batch dimension symbolic) and the names of its inputs and outputs."""

  def __init__(self, fn, specs, inputs, outputs):
    self.fn, self.specs, self.inputs, self.outputs = fn, tuple(specs), list(inputs), outputs

  def describe(self) -> dict:
    return {
      "inputs": [
        {"name": n, "shape": [_dim(d) for d in s.shape], "dtype": str(np.dtype(s.dtype))}
        for n, s in zip(self.inputs, self.specs)
      ],
      "outputs": self.outputs,
    }


def _audio_decoder(model, decoder: Function) -> Function:
  """The decoder followed by the vocoder: latent (and label) -> waveform at `data.sr`, the
  clip length of the run (normalization undone in the graph; peak-referenced features get
  the -6 dBFS peak `prior.features_to_audio` gives)."""
  config, voc = model.config, model.vocoder
  d = config.data
  n = int(round(d.seconds * d.sr))
  generator = vocoder_model.VocosGenerator(voc.cfg)
  params = voc.params

  def audio(*args):
    x = decoder.fn(*args)
    units = normalize_lib.denormalize(x, model.stats, d.normalize)
    y = vocoder_model.fit_length(generator.apply({"params": params}, units), n)
    if d.get("db_reference", "absolute") == "peak":
      top = jnp.max(jnp.abs(y), axis=-1, keepdims=True)
      y = y * jnp.where(top > 0, 10.0 ** (prior.PEAK_OUTPUT_DB / 20.0) / top, 1.0)
    return y

  return Function(audio, decoder.specs, decoder.inputs, ["audio"])


def _vocoder_functions(voc, b) -> tuple[dict, dict]:
  """A vocoder's own export: features in the store's units [b, n_mels, frames] -> waveform
  [b, hop * (frames - 1)], for the frames of one clip of its run (the overlap-add is laid out
  for a fixed frame count)."""
  generator = vocoder_model.VocosGenerator(voc.cfg)
  frames = voc.frames
  mel_spec = jax.ShapeDtypeStruct((b, voc.cfg.n_mels, frames), jnp.float32)
  fn = Function(
    lambda mel: generator.apply({"params": voc.params}, mel), (mel_spec,), ["mel"], ["audio"]
  )
  meta = {"kind": "vocoder", "features": voc.settings, "frames": frames}
  return {"vocoder": fn}, meta


STREAM_CHUNK = 1  # latent frames per exported streaming step


def _wave_functions(model, b) -> tuple[dict, dict]:
  """A waveform VAE's export: `encoder(audio [b, samples]) -> mu [b, frames, latent]` and
  `decoder(z) -> audio` for the clip length of its run (rounded up to whole latent frames),
  and for a causal model `stream_step(z [b, 1, latent], *state) -> (audio [b, hop], *state)`,
  one latent frame of a stream: the state starts as zeros of the shapes export.json lists
  (`stream.state`, in order) and `position` 0; the stream lags the decoder by `latency`.
  A causal model also gets `stream_encode_step(audio [b, hop], *state) -> (mu [b, 1, latent]
  or a codec's codes, *state)` (`stream_encode.state`): the encoder of the input `latency`
  samples late."""
  cfg, params = model.cfg, model.params
  module = model.module
  frames = -(-int(round(model.config.data.seconds * model.sr)) // cfg.hop)
  y_spec = jax.ShapeDtypeStruct((b, frames * cfg.hop), jnp.float32)
  z_spec = jax.ShapeDtypeStruct((b, frames, cfg.latent_dim), jnp.float32)
  key = jax.random.PRNGKey(0)
  apply = lambda *args, method: module.apply({"params": params}, *args, method=method)
  vectors = lambda z: apply(z, method="lookup") if model.is_codec else z
  if model.is_codec:  # codes in and out (rvq: every level; -1 drops a level)
    levels = (cfg.num_quantizers,) if cfg.bottleneck == "rvq" else ()
    z_spec = jax.ShapeDtypeStruct((b, frames, *levels), jnp.int32)
    encoder = Function(
      lambda y: apply(y, None, method="encode_codes"), (y_spec,), ["audio"], ["codes"]
    )
  else:
    encoder = Function(lambda y: apply(y, method="encode")[0], (y_spec,), ["audio"], ["mu"])
  z_name = "codes" if model.is_codec else "z"
  functions = {
    "encoder": encoder,
    "decoder": Function(
      lambda z: apply(vectors(z), key, method="decode_wave"), (z_spec,), [z_name], ["audio"]
    ),
  }
  meta = {
    "kind": "wave_vae",
    "sr": model.sr,
    "hop": cfg.hop,
    "frames": frames,
    "latent_dim": cfg.latent_dim,
    "causal": cfg.causal,
    "bottleneck": cfg.bottleneck,
  }
  if cfg.causal:
    functions |= _wave_stream_functions(model, b, apply, vectors, z_spec, meta)
  return functions, meta


def _wave_stream_functions(model, b, apply, vectors, z_spec, meta: dict) -> dict:
  """A causal waveform VAE's `stream_step` (latent frame in, audio out) and
  `stream_encode_step` (audio in, mu or codes out), each one latent frame a call; their state
  lists go into `meta` ('stream', 'stream_encode')."""
  cfg, key = model.cfg, jax.random.PRNGKey(0)
  z_name = "codes" if model.is_codec else "z"
  z_chunk = jax.ShapeDtypeStruct((b, STREAM_CHUNK, *z_spec.shape[2:]), z_spec.dtype)
  decode_step, meta["stream"] = _stream_function(
    model.init_stream(1),
    lambda z, cache: apply(vectors(z), cache, key, method="stream_decode"),
    (z_chunk, z_name),
    "audio",
    cfg.latency,
  )

  def encode_chunk(y, cache):
    (mu, _), cache = apply(y, cache, method="stream_encode")
    return (apply(mu, None, method="codes") if model.is_codec else mu), cache

  y_chunk = jax.ShapeDtypeStruct((b, STREAM_CHUNK * cfg.hop), jnp.float32)
  encode_step, meta["stream_encode"] = _stream_function(
    model.init_encode_stream(1),
    encode_chunk,
    (y_chunk, "audio"),
    "codes" if model.is_codec else "mu",  # the names of the offline encoder's output
    cfg.latency,
  )
  return {"stream_step": decode_step, "stream_encode_step": encode_step}


def _stream_function(state0, run_chunk, chunk, out_name: str, latency: int):
  """A streaming step `(x, *state) -> (y, *state)` of a causal waveform model, one chunk of
  STREAM_CHUNK latent frames (`run_chunk(x, cache) -> (y, cache)`; `chunk`: (the input's
  spec, its name); `state0`: the zero state at batch 1), and its export.json entry: the
  state's leaves, named by their paths, with their shapes and dtypes (zeros to start)."""
  spec, in_name = chunk
  (b,) = spec.shape[:1]
  leaves, treedef = jax.tree_util.tree_flatten_with_path(state0)
  names = [
    "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path) for path, _ in leaves
  ]
  specs = [jax.ShapeDtypeStruct((b, *x.shape[1:]) if x.ndim else (), x.dtype) for _, x in leaves]

  def step(x, *state):
    out, cache = run_chunk(x, jax.tree_util.tree_unflatten(treedef, state))
    return (out, *jax.tree_util.tree_leaves(cache))

  meta = {
    "chunk_frames": STREAM_CHUNK,
    "latency_samples": latency,
    "state": [
      {"name": n, "shape": [_dim(d) for d in s.shape], "dtype": str(np.dtype(s.dtype))}
      for n, s in zip(names, specs)
    ],
  }
  return Function(step, (spec, *specs), [in_name, *names], [out_name, *names]), meta


class _NoSpec:
  labels: dict = {}


_NO_SPEC = _NoSpec()


def _dim(d):
  return d if isinstance(d, int) else str(d)


def write(model, out_dir: str, onnx: bool = False) -> dict:
  """Exports `model` (from `jaxvae.load`) into `out_dir`; returns the content of
  `export.json`."""
  (b,) = jax_export.symbolic_shape("b")
  # jax.export's names ('cuda', 'rocm', 'tpu', 'cpu'), not the backend's ('gpu').
  platforms = sorted({jax_export.default_export_platform(), "cpu"})
  if isinstance(model, api.MidiModel):
    functions, meta = _midi_functions(model, b)
  elif isinstance(model, vocoder_lib.Vocoder):
    functions, meta = _vocoder_functions(model, b)
  elif isinstance(model, wave_lib.WaveModel):
    functions, meta = _wave_functions(model, b)
  else:
    functions, meta = _audio_functions(model, b)
  files = []
  for name, f in functions.items():
    exported = jax_export.export(jax.jit(f.fn), platforms=platforms)(*f.specs)
    path = os.path.join(out_dir, f"{name}.jax_export")
    with workdir_lib.atomic_path(path, fault="export.file") as tmp, open(tmp, "wb") as out:
      out.write(exported.serialize())
    files.append(os.path.basename(path))
  meta = {
    "format_version": FORMAT_VERSION,
    "model": "vocoder" if isinstance(model, vocoder_lib.Vocoder) else model.config.model.name,
    "step": model.step,
    **meta,
    "files": files,
    "functions": {name: f.describe() for name, f in functions.items()},
    "platforms": platforms,
    "labels": {k: list(v) for k, v in getattr(model, "spec", _NO_SPEC).labels.items()},
    "jax_version": jax.__version__,
  }
  if onnx:
    meta["onnx"] = {name: _to_onnx(name, f, out_dir) for name, f in functions.items()}
  workdir_lib.write_json(os.path.join(out_dir, "export.json"), meta, indent=2)
  return meta


def _audio_functions(model, b) -> tuple[dict, dict]:
  """name -> Function: the model's own pure functions (`api.AudioModel.encode_fn` /
  `decode_fn` / `decode_lyrics_fn`, `api.VQModel.codes_fn` / `decode_codes_fn`) with the
  variables as constants and every label unknown but the conditioning one."""
  variables, config, spec = model.variables, model.config, model.spec
  shape = tuple(spec.input_shape)
  x_spec = jax.ShapeDtypeStruct((b, *shape), jnp.float32)
  cond = config.model.get("cond_label", "")
  d = config.data
  meta = {
    "kind": "vq" if isinstance(model, api.VQModel) else "gaussian",
    "input_shape": list(shape),
    "input_dtype": "float32",
    "latent_dim": getattr(model, "latent_dim", None),
    "features": featurize.feature_params(config),
    "normalize": {"method": d.normalize, "stats": model.stats},
    "condition_label": cond or None,
    "lyrics_dim": spec.lyrics_dim or None,
  }

  batch_of = _batch_maker(spec, config, cond)
  if isinstance(model, api.VQModel):
    codes = model.encode(np.zeros((1, *shape), np.float32))
    code_spec = jax.ShapeDtypeStruct((b, *codes.shape[1:]), jnp.int32)
    return {
      "encoder": Function(
        lambda x: model.codes_fn(variables, batch_of(x)), (x_spec,), ["x"], ["codes"]
      ),
      "decoder": Function(
        lambda c: model.decode_codes_fn(variables, c), (code_spec,), ["codes"], ["x"]
      ),
    }, meta
  return _gaussian_functions(model, b, x_spec, batch_of, meta)


def _batch_maker(spec, config, cond: str):
  """`batch_of(x, label=None, lyrics=None, lyrics_mask=None)`: the model's input batch for
  features `x`, every label unknown but the conditioning one, no lyrics unless given."""

  def batch_of(x, label=None, lyrics=None, lyrics_mask=None):
    batch = prior.label_batch(spec.labels, config, None, x.shape[0])
    batch["x"] = x
    if cond and label is not None:
      batch[f"label_{cond}"] = label
    if spec.lyrics_dim:
      n = x.shape[0]
      batch["lyrics"] = (
        jnp.broadcast_to(jnp.float32(0), (n, spec.lyrics_dim)) if lyrics is None else lyrics
      )
      batch["lyrics_mask"] = (
        jnp.broadcast_to(jnp.float32(0), (n,)) if lyrics_mask is None else lyrics_mask
      )
    return batch

  return batch_of


def _gaussian_functions(model, b, x_spec, batch_of, meta: dict) -> tuple[dict, dict]:
  """A Gaussian-latent audio VAE's encoder and decoder (a conditional one's takes the label;
  the multimodal one's encoder takes lyrics and adds `lyrics_decoder`), and with the model's
  vocoder `audio_decoder` (latent -> waveform)."""
  variables, spec = model.variables, model.spec
  shape = tuple(spec.input_shape)
  cond = model.config.model.get("cond_label", "")

  def zeros(z):
    return jnp.broadcast_to(jnp.float32(0), (z.shape[0], *shape))

  z_spec = jax.ShapeDtypeStruct((b, model.latent_dim), jnp.float32)
  if spec.lyrics_dim:
    lyr = jax.ShapeDtypeStruct((b, spec.lyrics_dim), jnp.float32)
    encoder = Function(
      lambda x, ly, m: model.encode_fn(variables, batch_of(x, lyrics=ly, lyrics_mask=m)),
      (x_spec, lyr, jax.ShapeDtypeStruct((b,), jnp.float32)),
      ["x", "lyrics", "lyrics_mask"],
      ["mu", "logvar"],
    )
  else:
    encoder = Function(
      lambda x: model.encode_fn(variables, batch_of(x)), (x_spec,), ["x"], ["mu", "logvar"]
    )
  if cond:
    decoder = Function(
      lambda z, label: model.decode_fn(variables, z, batch_of(zeros(z), label)),
      (z_spec, jax.ShapeDtypeStruct((b,), jnp.int32)),
      ["z", f"label_{cond}"],
      ["x"],
    )
  else:
    decoder = Function(
      lambda z: model.decode_fn(variables, z, batch_of(zeros(z))), (z_spec,), ["z"], ["x"]
    )
  functions = {"encoder": encoder, "decoder": decoder}
  if model.vocoder is not None:
    functions["audio_decoder"] = _audio_decoder(model, decoder)
    meta["vocoder"] = {"workdir": model.vocoder.workdir, "step": model.vocoder.step}
  if spec.lyrics_dim:
    functions["lyrics_decoder"] = Function(
      lambda z: model.decode_lyrics_fn(variables, z), (z_spec,), ["z"], ["lyrics"]
    )
  return functions, meta


def _midi_functions(model, b) -> tuple[dict, dict]:
  """name -> Function of the MIDI transformer: the KV-cached `step`, the whole `sampler`
  (`jaxvae.sampling.tokens`), and the `encoder` of stages 2-3."""
  module, params = model.module, model.variables["params"]
  cfg, g = module.cfg, model.config.generate
  vae = cfg.is_vae
  length = 1 + int(g.num_tokens)
  if length > cfg.max_len:
    raise errors.ConfigError(
      f"config key 'generate.num_tokens' is {g.num_tokens}: the exported sampler's 1 + "
      f"{g.num_tokens} positions exceed model.max_len = {cfg.max_len}"
    )
  z_spec = jax.ShapeDtypeStruct((b, cfg.latent_dim), jnp.float32) if vae else None
  # The cache's layout: its leaves for batch 1, the batch axis then made symbolic.
  ones = jnp.zeros((1, cfg.latent_dim), jnp.float32) if vae else None
  shapes = jax.eval_shape(lambda: tokens_lib.init_cache(module, 1, length, ones))
  leaves, treedef = jax.tree.flatten(shapes)
  cache_specs = [jax.ShapeDtypeStruct((b, *s.shape[1:]) if s.ndim else (), s.dtype) for s in leaves]
  cache_names = [
    "cache/" + "/".join(str(getattr(k, "key", k)) for k in path)
    for path, _ in jax.tree_util.tree_flatten_with_path(shapes)[0]
  ]

  def step(tokens, *rest):
    z, leaves = (rest[0], rest[1:]) if vae else (None, rest)
    cache = jax.tree.unflatten(treedef, leaves)
    logits, cache = tokens_lib.decode_step(module, params, cache, tokens, z)
    return (logits[:, 0].astype(jnp.float32), *jax.tree.leaves(cache))

  tok1 = jax.ShapeDtypeStruct((b, 1), jnp.int32)
  z_in = [z_spec] if vae else []
  functions = {
    "step": Function(
      step,
      (tok1, *z_in, *cache_specs),
      ["tokens", *(["z"] if vae else []), *cache_names],
      ["logits", *cache_names],
    )
  }
  run = tokens_lib.sampler(module, length, int(g.top_k), vae)

  def sample(prompt, *rest):
    z = rest[0] if vae else jnp.zeros((), jnp.float32)
    key, temperature, top_p = rest[-3:]
    return run(params, prompt, z, key, temperature, top_p)

  scalar = jax.ShapeDtypeStruct((), jnp.float32)
  functions["sampler"] = Function(
    sample,
    (tok1, *z_in, jax.ShapeDtypeStruct((2,), jnp.uint32), scalar, scalar),
    ["prompt", *(["z"] if vae else []), "key", "temperature", "top_p"],
    ["tokens"],
  )
  if vae:
    seq = jax.ShapeDtypeStruct((b, int(model.config.data.midi.seq_len)), jnp.int32)
    functions["encoder"] = Function(
      lambda t: module.apply({"params": params}, t, method=module.encode),
      (seq,),
      ["tokens"],
      ["mu", "logvar"],
    )
  meta = {
    "kind": "tokens",
    "stage": model.stage,
    "seq_len": int(model.config.data.midi.seq_len),
    "latent_dim": model.latent_dim,
    "vocab_size": int(cfg.vocab_size),
    "tokens": {"pad": tokenizers.PAD, "start": tokenizers.START, "end": tokenizers.END},
    # The vocabulary travels with the model: `tokenizers.make(record)` rebuilds it; a MidiTok
    # record's "miditok" entry is MidiTok's own tokenizer file (REMI(params=...) loads it).
    "tokenizer": {"fingerprint": model.tokenizer.fingerprint, "record": model.tokenizer.record},
    "sampler": {"length": length, "prompt_length": 1, "top_k": int(g.top_k)},
    "cache": [
      {"name": n, "shape": [_dim(d) for d in s.shape], "dtype": str(np.dtype(s.dtype))}
      for n, s in zip(cache_names, cache_specs)
    ],
  }
  return functions, meta


def _to_onnx(name: str, f: Function, out_dir: str) -> dict:
  """`name.onnx` from jax2onnx, checked with onnxruntime on a batch of 2 against JAX; or
  {'error': why} (the converter's reason, or a mismatch beyond ONNX_TOLERANCE)."""
  try:
    from jax2onnx import to_onnx
    import onnxruntime
  except ImportError as e:
    return {"error": f"jax2onnx and onnxruntime are needed ({e.name} is not installed)"}
  specs = [
    jax.ShapeDtypeStruct(tuple("b" if not isinstance(d, int) else d for d in s.shape), s.dtype)
    for s in f.specs
  ]
  try:
    proto = to_onnx(f.fn, specs, model_name=name, input_names=f.inputs)
  except Exception as e:  # noqa: BLE001 - any converter failure is reported, not raised
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    logging.info("ONNX: %s did not convert: %s: %s", name, type(e).__name__, reason)
    return {"error": f"{type(e).__name__}: {reason}"[:300]}
  path = os.path.join(out_dir, f"{name}.onnx")
  with workdir_lib.atomic_path(path) as tmp, open(tmp, "wb") as out:
    out.write(proto.SerializeToString())
  inputs = _example_inputs(f.specs)
  try:
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(None, {i.name: x for i, x in zip(session.get_inputs(), inputs)})
    want = jax.tree.leaves(jax.jit(f.fn)(*inputs))
    diff = max(float(np.max(np.abs(np.asarray(w, np.float64) - g))) for w, g in zip(want, got))
  except Exception as e:  # noqa: BLE001 - a model onnxruntime cannot run is reported, not raised
    os.remove(path)
    return {"error": f"onnxruntime: {type(e).__name__}: {str(e).strip()[:200]}"}
  if not diff <= ONNX_TOLERANCE:
    os.remove(path)
    return {"error": f"onnxruntime differs from JAX by {diff:.3g} (> {ONNX_TOLERANCE})"}
  return {"file": os.path.basename(path), "max_abs_diff": diff}


def _example_inputs(specs) -> list[np.ndarray]:
  """Inputs of batch 2 for checking a conversion: normal floats, small non-negative ints."""
  rng = np.random.default_rng(0)
  out = []
  for s in specs:
    shape = tuple(2 if not isinstance(d, int) else d for d in s.shape)
    if np.issubdtype(s.dtype, np.floating):
      out.append(rng.normal(size=shape).astype(s.dtype))
    else:
      out.append(rng.integers(0, 2, size=shape).astype(s.dtype))
  return out
