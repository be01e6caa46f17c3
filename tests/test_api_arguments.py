"""Bad arguments to `jaxvae.load`'s models: every public method checks its arguments before any
work, so each bad value below is one error of `jaxvae.errors.USER_ERRORS` whose message starts
with the argument's name (not a ZeroDivisionError, a TypeError or an error from inside XLA).

The audio VAE is the suite's short run. The other models (conditional, multimodal, VaDE,
VQ-VAE, MIDI transformer) are their modules with no weights at all: a bad argument must be
refused before the weights are read, and one that slipped through would fail on the missing
parameters with an error that is not a user error."""

import inspect
import re
import types
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import TINY
from conftest import load_config
import jaxvae
from jaxvae import api
from jaxvae import errors
from jaxvae.data.spec import DataSpec
from jaxvae.symbolic import tokenizers
from jaxvae.variants import registry

FEATURES = (32, 87)  # the short run's features
LABELS = {"genre": ("pop", "rock", "jazz"), "language": ("en", "es")}
# Settings of the data shared by the audio models below (the short run's).
DATA = {k: v for k, v in TINY.items() if k.startswith("data.")}
EVENTS = tokenizers.make({"kind": "events"})
MIDI = {
  "data.midi.seq_len": "48",
  "model.d_model": "32",
  "model.num_layers": "1",
  "model.num_heads": "2",
  "model.d_ff": "64",
  "model.enc_layers": "1",
  "model.latent_regions": "4",
  "model.latent_fine_regions": "8",
  "model.stage": "3",
  "generate.num_tokens": "24",
}


def _unweighted(cls, config_name: str, overrides: dict, spec: DataSpec, stats=None):
  """A model of `cls` with its module and no variables (nothing compiled, nothing trained)."""
  config = load_config(config_name, overrides)
  module = registry.get(config.model.name).build_model(config.model, spec, dtype=config.dtype)
  state = types.SimpleNamespace(step=0, params={}, model_state={})
  return cls(config, module, state, spec, stats or {"mean": 0.0, "std": 1.0}, "/nonexistent")


@pytest.fixture(scope="module")
def models(short_run, tiny_overrides):
  cache = {"data.cache_dir": tiny_overrides["data.cache_dir"]}
  small = {"model.latent_dim": "8", "model.channels": "(4, 8, 8)", **DATA, **cache}
  return {
    "audio": jaxvae.load(short_run),
    "conditional": _unweighted(
      api.AudioModel, "cvae.py:genre,small", small, DataSpec(FEATURES, LABELS)
    ),
    "multimodal": _unweighted(
      api.AudioModel, "multimodal_vae.py:small", small, DataSpec(FEATURES, LABELS, lyrics_dim=12)
    ),
    "vade": _unweighted(
      api.AudioModel,
      "vade.py:small",
      {"model.hidden": "(4, 8)", "model.latent_dim": "8", **DATA, **cache},
      DataSpec(FEATURES, LABELS),
    ),
    "vq": _unweighted(
      api.VQModel,
      "puzzle_vqvae.py:small",
      {"data.n_mels": "32", "model.code_dim": "8", "model.grid": "(6, 6)", **cache},
      DataSpec((32, 32), {"word": ("yes", "no")}),
      {"min": 0.0, "max": 1.0},
    ),
    "midi": _unweighted(
      api.MidiModel, "music_transformer_vaegan.py:small", MIDI, DataSpec((48,), tokenizer=EVENTS)
    ),
  }


class Row(NamedTuple):
  key: str  # the model of `models` ('api': the module's functions)
  method: str
  arg: str  # the argument given a bad value
  kwargs: dict  # the call: the bad value, and good values of the arguments it needs
  match: str = ""  # a regex the message must hold; default: the message starts with `arg`


X = np.zeros((2, *FEATURES), np.float32)
WAVE = np.zeros((2, 1000), np.float32)
Z = np.zeros((2, 8), np.float32)
VQ_X = np.zeros((2, 32, 32), np.float32)
CODES = np.zeros((2, 6, 6), np.int32)
WINDOWS = np.ones((2, 48), np.int32)
BAD_COUNTS = (0, -1, 2.5, "3", True, None, np.float32(2))
BAD_SR = (0, -22050, 22050.5, "22050", True)


def _audio_inputs(key: str, method: str, arg: str = "x", shape=FEATURES, **good) -> list[Row]:
  """Bad features / waveforms / paths for an audio input argument."""
  values = [
    (None, ""),
    (np.array(["a.wav", "b.wav"]), ""),  # an array of strings is not a list of paths
    (np.zeros((1, *shape), np.complex64), ""),
    (np.zeros((1, *shape), bool), ""),
    (np.full((1, *shape), np.nan, np.float32), ""),
    (np.full((1, *shape), np.inf, np.float32), ""),
    (np.zeros((2, *shape, 1), np.float32), ""),
    (np.zeros((0, *shape), np.float32), ""),
    ([[0.0, 1.0], [0.0]], ""),  # ragged
    (["a.wav", 3], ""),
    ([], ""),
    ("missing.wav", "missing.wav"),  # AudioError, naming the file
    (np.zeros((2, 300), np.float32), "sample rate"),  # a waveform without its rate
  ]
  return [Row(key, method, arg, {**good, arg: v}, m) for v, m in values]


def _sr(key: str, method: str, first: str = "x") -> list[Row]:
  return [Row(key, method, "sr", {first: WAVE, "sr": v}) for v in BAD_SR]


def _latent_rows(key: str, method: str, arg: str = "z", width: int = 8, **good) -> list[Row]:
  """Bad latents `[B, width]` (None too, unless `None` means "from the prior")."""
  values = (
    np.zeros((2, width + 1)),
    np.zeros((2, 3, width)),
    np.zeros((0, width)),
    np.full((2, width), np.nan),
    np.array([["a"] * width]),
    np.zeros((1, width), np.complex64),
    "z",
  )
  values += () if key == "midi" else (None,)
  return [Row(key, method, arg, {**good, arg: v}) for v in values]


def _label_rows(key: str, method: str, **good) -> list[Row]:
  return [Row(key, method, "label", {**good, "label": v}) for v in ("mood", 5, ["genre"], None)]


def _shared_audio_rows(key: str, shape) -> list[Row]:
  """`features` and `to_audio`, which every audio model has."""
  rows = _audio_inputs(key, "features", "audio", shape, sr=22050)[:-2]
  rows += [Row(key, "features", "audio", {"audio": "missing.wav"}, "missing.wav")]
  rows += [Row(key, "features", "audio", {"audio": np.zeros((2, 3, 300))})]
  rows += [Row(key, "features", "sr", {"audio": WAVE[0], "sr": v}) for v in BAD_SR]
  features = np.zeros((1, *shape), np.float32)
  rows += [
    Row(key, "to_audio", "features", {"features": v})
    for v in (None, WAVE, np.full((1, *shape), np.nan), np.array(["x"]), "a.wav")
  ]
  rows += [Row(key, "to_audio", "n_iter", {"features": features, "n_iter": v}) for v in BAD_COUNTS]
  rows += [
    Row(key, "to_audio", "vocoder", {"features": features, "vocoder": v})
    for v in (5, ["a"], "/nonexistent/vocoder")
  ]
  return rows


ROWS: list[Row] = [
  Row("api", "load", "workdir", {"workdir": None}),
  Row("api", "load", "workdir", {"workdir": 5}),
  Row("api", "load", "workdir", {"workdir": "/nonexistent/run"}, "not a jaxvae workdir"),
  Row("api", "load", "which", {"workdir": "/nonexistent", "which": "newest"}),
  Row("api", "load", "which", {"workdir": "/nonexistent", "which": None}),
  Row("api", "load", "vocoder", {"workdir": "/nonexistent", "vocoder": 5}),
  Row("api", "load", "vocoder", {"workdir": "/nonexistent", "vocoder": ["runs/voc"]}),
]

# The Gaussian audio VAEs.
ROWS += _shared_audio_rows("audio", FEATURES)
ROWS += _audio_inputs("audio", "encode")
ROWS += _sr("audio", "encode")
ROWS += [
  Row("audio", "encode", "condition", {"x": X, "condition": "rock"}),  # not conditional
  Row("conditional", "encode", "condition", {"x": X, "condition": "blues"}),
  Row("conditional", "encode", "condition", {"x": X, "condition": 1}),
  Row("conditional", "encode", "condition", {"x": X, "condition": ["rock"]}),
  Row("audio", "encode", "lyrics", {"x": X, "lyrics": np.zeros((2, 12))}, "does not read lyrics"),
  Row("multimodal", "encode", "lyrics", {"x": X, "lyrics": np.zeros((2, 5))}),
  Row("multimodal", "encode", "lyrics", {"x": X, "lyrics": np.zeros((3, 12))}),
  Row("multimodal", "encode", "lyrics", {"x": X, "lyrics": np.zeros((2, 2, 12))}),
  Row("multimodal", "encode", "lyrics", {"x": X, "lyrics": np.full((2, 12), np.inf)}),
  Row("multimodal", "encode", "lyrics", {"x": X, "lyrics": np.array([["a"] * 12] * 2)}),
  Row("multimodal", "encode", "lyrics", {"x": X, "lyrics": "some words"}),
]
ROWS += _latent_rows("multimodal", "decode_lyrics")
ROWS += [Row("audio", "decode_lyrics", "z", {"z": Z}, "does not decode lyrics")]
# The pure functions (their arguments may be traced: shapes and dtypes are checked).
VARIABLES = {"params": {}}
Z_JAX = jnp.zeros((2, 8))
BAD_Z_JAX = (None, jnp.zeros((2, 3)), jnp.zeros((2, 8), jnp.complex64), jnp.zeros((8,)))
for key, method, good in (
  ("audio", "encode_fn", {"batch": {"x": jnp.zeros((2, *FEATURES))}}),
  ("multimodal", "decode_lyrics_fn", {"z": Z_JAX}),
  ("audio", "decode_fn", {"z": Z_JAX, "batch": {}}),
):
  ROWS += [Row(key, method, "variables", {**good, "variables": v}) for v in (None, {"w": {}}, [1])]
ROWS += [
  Row("audio", "encode_fn", "batch", {"variables": VARIABLES, "batch": v})
  for v in (
    None,
    {},
    {"x": jnp.zeros((2, 5))},
    {"x": np.array(["a"])},
    {"x": jnp.zeros((2, *FEATURES), bool)},
  )
]
ROWS += [
  Row("multimodal", "decode_lyrics_fn", "z", {"variables": VARIABLES, "z": v}) for v in BAD_Z_JAX
]
ROWS += [
  Row("audio", "decode_fn", "z", {"variables": VARIABLES, "z": v, "batch": {}}) for v in BAD_Z_JAX
]
ROWS += [Row("audio", "decode_fn", "batch", {"variables": VARIABLES, "z": Z_JAX, "batch": None})]
ROWS += _audio_inputs("audio", "reconstruct")
ROWS += _sr("audio", "reconstruct")
ROWS += [
  Row("audio", "reconstruct", "condition", {"x": X, "condition": "rock"}),
  Row("conditional", "reconstruct", "condition", {"x": X, "condition": "blues"}),
]
ROWS += _latent_rows("audio", "decode")
ROWS += [
  Row("audio", "decode", "condition", {"z": Z, "condition": "rock"}),
  Row("conditional", "decode", "condition", {"z": Z, "condition": "blues"}),
  Row("conditional", "decode", "condition", {"z": Z, "condition": 0}),
]
ROWS += [Row("audio", "sample", "n", {"n": v}) for v in BAD_COUNTS]
ROWS += [
  Row("audio", "sample", "seed", {"n": 2, "seed": v}) for v in (1.5, "0", None, 2**70, 2**63)
]
ROWS += [
  Row("audio", "sample", "condition", {"n": 2, "condition": "rock"}),
  Row("conditional", "sample", "condition", {"n": 2, "condition": "blues"}),
  Row("conditional", "sample", "condition", {"n": 2, "condition": 2}),
]
for arg in ("a", "b"):
  other = "b" if arg == "a" else "a"
  ROWS += [
    r
    for r in _audio_inputs("audio", "interpolate", arg, **{other: X[0]})
    if r.match != "sample rate"  # one waveform is taken at the model's rate
  ]
  ROWS.append(Row("audio", "interpolate", arg, {other: X[0], arg: np.zeros((2, 2, 300))}))
ROWS += [
  Row("audio", "interpolate", "steps", {"a": X[0], "b": X[1], "steps": v})
  for v in (1, 0, -3, 2.5, "5", None)
]
ROWS += [
  Row("audio", "interpolate", "method", {"a": X[0], "b": X[1], "method": v})
  for v in ("cubic", None, 1)
]
ROWS += [
  Row("audio", "interpolate", "condition", {"a": X[0], "b": X[1], "condition": "rock"}),
  Row("conditional", "interpolate", "condition", {"a": X[0], "b": X[1], "condition": "blues"}),
]
ROWS += _label_rows("audio", "latent_means")
ROWS += _label_rows("audio", "attribute_vector", source="pop", target="rock")
ROWS += [
  Row(
    "audio", "attribute_vector", arg, {"label": "genre", "source": "pop", "target": "rock", arg: v}
  )
  for arg in ("source", "target")
  for v in (None, 5, ["rock"])
]
GOOD_ATTRIBUTE = {"x": X, "label": "genre", "source": "pop", "target": "rock"}
ROWS += _audio_inputs(
  "audio", "apply_attribute", **{k: v for k, v in GOOD_ATTRIBUTE.items() if k != "x"}
)
ROWS += _label_rows("audio", "apply_attribute", x=X, source="pop", target="rock")
ROWS += [
  Row("audio", "apply_attribute", arg, {**GOOD_ATTRIBUTE, arg: v})
  for arg in ("source", "target")
  for v in (None, 5)
]
ROWS += [
  Row("audio", "apply_attribute", "strength", {**GOOD_ATTRIBUTE, "strength": v})
  for v in (np.nan, np.inf, "1", None, True, 1j, np.ones(3))
]
ROWS += [
  Row("audio", "apply_attribute", "sr", {**GOOD_ATTRIBUTE, "x": WAVE, "sr": v}) for v in BAD_SR
]
ROWS += _audio_inputs("audio", "nearest_label", label="genre")
ROWS += _label_rows("audio", "nearest_label", x=X)
ROWS += [
  Row("audio", "nearest_label", "sr", {"x": WAVE, "label": "genre", "sr": v}) for v in BAD_SR
]
ROWS += _latent_rows("audio", "nearest_label_of_latent", label="genre")
ROWS += _label_rows("audio", "nearest_label_of_latent", z=Z)
ROWS += [Row("audio", "cluster", "x", {"x": X}, "no clusters")]  # not a VaDE
ROWS += _audio_inputs("vade", "cluster")
ROWS += _sr("vade", "cluster")

# The VQ-VAE.
ROWS += _shared_audio_rows("vq", (32, 32))
for method in ("encode", "reconstruct", "code_usage"):
  ROWS += _audio_inputs("vq", method, shape=(32, 32))
  ROWS += _sr("vq", method)
for v in (None, {"weights": {}}):
  ROWS.append(
    Row("vq", "codes_fn", "variables", {"variables": v, "batch": {"x": jnp.asarray(VQ_X)}})
  )
  ROWS.append(
    Row("vq", "decode_codes_fn", "variables", {"variables": v, "codes": jnp.asarray(CODES)})
  )
for v in (None, {"x": jnp.zeros((2, 32, 87))}, {"y": jnp.asarray(VQ_X)}):
  ROWS.append(Row("vq", "codes_fn", "batch", {"variables": {"params": {}}, "batch": v}))
for v in (
  None,
  jnp.zeros((2, 6, 6)),
  jnp.zeros((2, 5, 6), jnp.int32),
  jnp.zeros((6, 6), jnp.int32),
):
  ROWS.append(Row("vq", "decode_codes_fn", "codes", {"variables": {"params": {}}, "codes": v}))
ROWS += [
  Row("vq", "decode_codes", "codes", {"codes": v})
  for v in (
    None,
    CODES.astype(np.float32),
    np.zeros((2, 5, 5), np.int32),
    np.zeros((2, 2, 6, 6), np.int32),
    np.zeros((0, 6, 6), np.int32),
    np.full((6, 6), 10),
    np.full((6, 6), -1),
    np.full((6, 6), 2**40),
    np.array([["a"] * 6] * 6),
    "codes",
  )
]

# The MIDI transformer.
BAD_SOURCES = (5, None, np.zeros((2, 48), np.float32), [1, 2, 3])
ROWS += [Row("midi", "tokens", "midi_file", {"midi_file": v}) for v in BAD_SOURCES]
ROWS += [Row("midi", "tokens", "midi_file", {"midi_file": "nope.mid"}, "nope.mid")]
for method in ("generate_tokens", "generate"):
  ROWS += [Row("midi", method, "n_tokens", {"n_tokens": v}) for v in (0, -1, 2.5, "8", True, 10**6)]
  ROWS += [
    Row("midi", method, "temperature", {"temperature": v})
    for v in (-0.5, np.nan, np.inf, "hot", True)
  ]
  ROWS += [Row("midi", method, "top_k", {"top_k": v}) for v in (-1, 2.5, 10**6, "40")]
  ROWS += [Row("midi", method, "top_p", {"top_p": v}) for v in (0.0, -0.1, 1.5, np.nan, "0.9")]
  ROWS += [Row("midi", method, "seed", {"seed": v}) for v in (0.5, "1", None, 2**64)]
  ROWS += _latent_rows("midi", method, width=66)
ROWS += [Row("midi", "generate_tokens", "num", {"num": v}) for v in BAD_COUNTS]
ROWS += [
  Row("midi", "generate_tokens", "prompt", {"prompt": v, "num": 2})
  for v in ([], [1.5], [-1], [10**4], np.ones((3, 2), np.int32), np.ones((1, 1, 2), np.int32), "1")
]
ROWS += [
  Row("midi", "encode_tokens", "windows", {"windows": v})
  for v in (
    None,
    5,
    [[1, 2, 3]],
    WINDOWS.astype(np.float32),
    np.ones((2, 1), np.int32),
    np.ones((2, 4096), np.int32),
    np.full((2, 48), 10**4),
    np.full((2, 48), -1),
    np.ones((2, 2, 48), np.int32),
    np.zeros((0, 48), np.int32),
  )
]
ROWS += [Row("midi", "encode_midi", "midi_file", {"midi_file": v}) for v in BAD_SOURCES]
ROWS += [Row("midi", "encode_midi", "midi_file", {"midi_file": "nope.mid"}, "nope.mid")]
for arg in ("a", "b"):
  good = {"b" if arg == "a" else "a": WINDOWS}
  ROWS += [Row("midi", "interpolate_midi", arg, {**good, arg: v}) for v in BAD_SOURCES]
GOOD_PAIR = {"a": WINDOWS, "b": WINDOWS}
ROWS += [
  Row("midi", "interpolate_midi", "steps", {**GOOD_PAIR, "steps": v}) for v in (1, 0, 2.5, None)
]
ROWS += [
  Row("midi", "interpolate_midi", "method", {**GOOD_PAIR, "method": v}) for v in ("cubic", 0)
]
ROWS += [Row("midi", "interpolate_midi", "seed", {**GOOD_PAIR, "seed": v}) for v in (0.5, None)]
ROWS += [
  Row("midi", "interpolate_midi", "sampling", {**GOOD_PAIR, "top": 5}, "^top: not an argument"),
  Row("midi", "interpolate_midi", "sampling", {**GOOD_PAIR, "z": Z}, "^z: not an argument"),
  Row("midi", "interpolate_midi", "sampling", {**GOOD_PAIR, "temperature": -1.0}, "^temperature"),
  Row("midi", "interpolate_midi", "sampling", {**GOOD_PAIR, "n_tokens": 0}, "^n_tokens"),
]
ROWS += [Row("midi", "nll", "midi_file", {"midi_file": v}) for v in BAD_SOURCES]
ROWS += [Row("midi", "nll", "midi_file", {"midi_file": np.full((1, 48), 10**4)})]
ROWS += [Row("midi", "nll", "samples", {"midi_file": WINDOWS, "samples": v}) for v in BAD_COUNTS]
ROWS += [Row("midi", "nll", "seed", {"midi_file": WINDOWS, "seed": v}) for v in (0.5, None, 2**63)]
ROWS += [Row("midi", "nll", "seed", {"midi_file": WINDOWS, "seed": 2**63 - 2, "samples": 3})]
ROWS += [Row("midi", "nll", "per", {"midi_file": WINDOWS, "per": v}) for v in ("bar", None, 1)]


def _call(models, row: Row):
  target = api if row.key == "api" else models[row.key]
  return getattr(target, row.method)(**row.kwargs)


@pytest.mark.parametrize(
  "row", ROWS, ids=[f"{r.key}.{r.method}.{r.arg}-{i}" for i, r in enumerate(ROWS)]
)
def test_a_bad_argument_is_one_user_error_naming_it(models, row):
  with pytest.raises(Exception) as info:
    _call(models, row)
  assert isinstance(info.value, errors.USER_ERRORS), repr(info.value)
  message = str(info.value)
  assert re.search(row.match or rf"^{re.escape(row.arg)}\b", message), message
  assert "\n" not in message, message


# Which models of the table each class's methods are called on.
CLASSES = {
  api.AudioModel: ("audio", "conditional", "multimodal", "vade"),
  api.VQModel: ("vq",),
  api.MidiModel: ("midi",),
}


def _arguments(fn) -> list[str]:
  return [p for p in inspect.signature(fn).parameters if p != "self"]


def test_every_public_function_and_argument_is_in_the_table():
  """A new public method (or argument) must come with bad values here, so it cannot skip
  the checks."""
  missing = [
    f"api.load({a})"
    for a in _arguments(api.load)
    if ("api", "load", a) not in {(r.key, r.method, r.arg) for r in ROWS}
  ]
  for cls, keys in CLASSES.items():
    for name, fn in inspect.getmembers(cls, inspect.isfunction):
      if name.startswith("_"):
        continue
      covered = {r.arg for r in ROWS if r.key in keys and r.method == name}
      missing += [f"{cls.__name__}.{name}({a})" for a in _arguments(fn) if a not in covered]
  assert not missing, "no bad values in ROWS for: " + ", ".join(missing)


def test_good_arguments_of_other_types_still_work(models):
  """The checks take what worked before: numpy integers, jax arrays, bfloat16 and integer
  features, one example without its batch axis, negative seeds, the extreme valid settings."""
  audio = models["audio"]
  np.testing.assert_array_equal(
    audio.sample(np.int64(2), seed=np.int32(-1)), audio.sample(2, seed=-1)
  )
  z = np.random.default_rng(0).normal(size=(1, 8)).astype(np.float32)
  np.testing.assert_array_equal(audio.decode(jnp.asarray(z[0])), audio.decode(z))
  x = np.random.default_rng(1).normal(size=FEATURES).astype(jnp.bfloat16)
  np.testing.assert_array_equal(
    audio.encode(jnp.asarray(x))[0], audio.encode(x.astype(np.float32))[0]
  )
  assert audio.encode(np.zeros((1, *FEATURES), np.int16))[0].shape == (1, 8)
  assert audio.interpolate(x, x, steps=np.int64(2), condition=None).shape == (2, *FEATURES)
  midi = models["midi"]
  assert midi._sampling(1, 0.0, 774, 1.0) == (1, 0.0, 774, 1.0)
  assert midi._sampling(np.int32(3), np.float32(0.5), 0, 1e-6) == (3, 0.5, 0, 1e-6)
  assert midi._windows(np.ones((48,), np.int64)).dtype == np.int32
