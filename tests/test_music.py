"""Seed 001 end to end: MIDI folder -> token store (a broken file counted, training pieces
augmented), progressive stages 1 -> 2 -> 3 each initialized from the previous workdir, MIDI
generation from the prior and between two files' latents, and eval's music statistics."""

import json
import os
import shutil

import numpy as np
import pytest
from test_train import _cli

from conftest import ROOT

pretty_midi = pytest.importorskip("pretty_midi")

TINY = {
  "data.midi.seq_len": "48",
  "data.midi.overlap": "8",
  "model.d_model": "32",
  "model.num_layers": "1",
  "model.num_heads": "2",
  "model.d_ff": "64",
  "model.enc_layers": "1",
  "model.disc_dim": "16",
  "model.disc_layers": "1",
  "model.disc_scales": "(1, 2)",
  "model.latent_regions": "4",
  "model.latent_fine_regions": "8",
  "train.batch_size": "4",
  "train.epochs": "1",
  "train.max_steps": "2",
  "generate.num_tokens": "24",
  "data.val_fraction": "0.3",
  # As many as --num_samples below: one compiled sampler serves all three.
  "eval.num_generated": "3",
  "generate.interpolation_steps": "3",
}


def _piece(path, seed):
  rng = np.random.default_rng(seed)
  pm = pretty_midi.PrettyMIDI()
  inst = pretty_midi.Instrument(program=0)
  t = 0.0
  for _ in range(40):
    d = float(rng.choice([0.25, 0.5]))
    inst.notes.append(
      pretty_midi.Note(int(rng.integers(40, 110)), int(rng.integers(50, 80)), t, t + d)
    )
    t += d
  pm.instruments.append(inst)
  pm.write(str(path))


def midi_folder_overrides(tmp_path, n=3):
  """A folder of `n` small pieces (good0.mid, ...) and the overrides that read it into a token
  store in a cache of its own."""
  folder = tmp_path / "midi"
  folder.mkdir()
  for i in range(n):
    _piece(folder / f"good{i}.mid", i)
  return folder, dict(
    TINY,
    **{
      "data.layout": "folder",
      "data.root": str(folder),
      "data.cache_dir": str(tmp_path / "cache"),
    },
  )


@pytest.fixture(scope="module")
def midi_folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("midi")
  for style in ("fast", "slow"):
    os.makedirs(root / style)
    for k in range(4):
      _piece(root / style / f"{style}_{k}.mid", hash((style, k)) % 1000)
  (root / "slow" / "broken.mid").write_bytes(b"MThd garbage")
  return str(root)


CFG = "music_transformer_vaegan.py:small"


@pytest.fixture(scope="module")
def stages(tmp_path_factory, midi_folder, cache_dir):
  """Stages 1 -> 2 -> 3 trained in turn, each from the previous workdir: (the three workdirs,
  the overrides they share)."""
  tmp_path = tmp_path_factory.mktemp("stages")
  overrides = dict(
    TINY, **{"data.layout": "folder", "data.root": midi_folder, "data.cache_dir": cache_dir}
  )
  # One decoder layer and one discriminator scale: each of the five CLI runs compiles less.
  overrides |= {"model.num_layers": "1", "model.disc_scales": "(1,)"}
  previous, workdirs = None, {}
  for stage in (1, 2, 3):
    workdir = tmp_path / f"stage{stage}"
    extra = {"stage": str(stage)} | ({"init_from": str(previous)} if previous else {})
    assert _cli(workdir, overrides | extra, config=CFG) == 0
    workdirs[stage] = previous = workdir
  return workdirs, overrides


def test_progressive_stages_and_generation(stages, tmp_path, midi_folder):
  workdirs, overrides = stages
  cfg = CFG
  for stage, workdir in workdirs.items():
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    last = [r for r in rows if r.get("kind") == "epoch"][-1]
    assert np.isfinite(last["val/nll"]) and last["val/ppl"] > 1
    if stage >= 2:
      assert "val/kl" in last
    if stage == 3:
      assert "train/loss_d" in last and last["train/grad_norm_g"] > 0
  previous = workdirs[3]
  info = json.load(open(workdirs[1] / "jaxvae_run.json"))["data"]
  assert info["bad_files"] == 1 and info["bad"][0]["clip_id"] == "slow/broken.mid"
  assert (
    _cli(
      previous, overrides | {"stage": "3"}, mode="generate", config=cfg, extra=["--num_samples=3"]
    )
    == 0
  )
  out = previous / "generate"
  tokens = np.load(out / "sample_01.npy")
  assert tokens.shape == (25,) and tokens.min() >= 0 and tokens.max() < 774
  pretty_midi.PrettyMIDI(str(out / "sample_00.mid"))  # a readable MIDI file

  # Eval: token NLL / perplexity and generated-vs-data statistics.
  assert _cli(previous, overrides | {"stage": "3"}, mode="eval", config=cfg) == 0
  m = json.load(open(previous / "eval" / "metrics.json"))
  assert m["step"] == 2 and np.isfinite(m["val"]["nll"])
  assert m["val"]["ppl"] == pytest.approx(np.exp(m["val"]["nll"])) and m["val"]["ppl"] > 1
  data, gen = m["data"], m["generated"]
  assert data["pieces"] > 0 and data["empty"] == 0
  assert sum(data["pitch_class_histogram"]) == pytest.approx(1.0)
  assert data["polyphony"] >= 1 and data["note_density"] > 0 and data["pitch_range"] > 0
  assert gen["pieces"] == 3 and len(m["generation"]["files"]) == 3
  rec = m["reconstruction"]  # stage 3 has a latent: note-level scores of reconstructions
  assert rec["windows"] > 0 and rec["token_accuracy_teacher_forced"] == m["val"]["accuracy"]
  assert all(0.0 <= rec[k] <= 1.0 for k in ("precision", "recall", "f1", "f1_offset"))
  if gen["empty"] < gen["pieces"]:  # an untrained model may emit no note at all
    assert 0 <= m["distance"]["pitch_class_js"] <= 1
    assert 0 <= m["distance"]["overlap_area"]["polyphony"] <= 1
  else:
    assert m["distance"]["pitch_class_js"] is None

  # Interpolation between two files' latents.
  a, b = (os.path.join(midi_folder, f) for f in ("fast/fast_0.mid", "slow/slow_1.mid"))
  assert (
    _cli(
      previous,
      overrides | {"stage": "3"},
      mode="generate",
      config=cfg,
      extra=[f"--interpolate={a},{b}"],
    )
    == 0
  )
  record = json.load(open(out / "interp.json"))
  assert record["a"] == a and record["steps"] == 3 and record["alpha"] == [0.0, 0.5, 1.0]
  assert not np.allclose(record["z_a"], record["z_b"]) and len(record["z_a"]) == 66
  for k in range(3):
    assert np.load(out / f"interp_{k:02d}.npy").shape == (25,)
    pretty_midi.PrettyMIDI(str(out / f"interp_{k:02d}.mid"))
  missing = f"--interpolate={a},{tmp_path / 'nope.mid'}"
  assert (
    _cli(previous, overrides | {"stage": "3"}, mode="generate", config=cfg, extra=[missing]) == 1
  )
  assert (
    _cli(
      workdirs[1],
      overrides | {"stage": "1"},
      mode="generate",
      config=cfg,
      extra=[f"--interpolate={a},{b}"],
    )
    == 1
  )


_RUN_EXPORTED = """
import json, sys
import numpy as np
from jax import export
out, work = sys.argv[1], sys.argv[2]
meta = json.load(open(out + "/export.json"))
fn = {
  n: export.deserialize(open(f"{out}/{n}.jax_export", "rb").read())
  for n in ("step", "sampler", "encoder")
}
inp = np.load(work + "/inputs.npz")
mu, logvar = fn["encoder"].call(inp["windows"])
prompt = np.full((2, 1), meta["tokens"]["start"], np.int32)
one = np.float32(1.0)
sampled = fn["sampler"].call(prompt, inp["z"], inp["key"], np.float32(0.9), one)
greedy = fn["sampler"].call(prompt, inp["z"], inp["key"], np.float32(0.0), one)
cache = [np.zeros([2 if d == "b" else d for d in c["shape"]], c["dtype"]) for c in meta["cache"]]
ids, stepped = prompt, [prompt[:, 0]]
for _ in range(meta["sampler"]["length"] - 1):  # greedy decoding, one step at a time
  logits, *cache = fn["step"].call(ids, inp["z"], *cache)
  logits = np.asarray(logits).copy()
  logits[:, [meta["tokens"]["pad"], meta["tokens"]["start"]]] = -np.inf
  ids = logits.argmax(-1).astype(np.int32)[:, None]
  stepped.append(ids[:, 0])
np.savez(work + "/got.npz", mu=mu, logvar=logvar, sampled=sampled, greedy=greedy,
         stepped=np.stack(stepped, 1))
assert "jaxvae" not in sys.modules
"""


def test_midi_api_and_export(stages, midi_folder, tmp_path):
  """`jaxvae.load` on the MIDI stages: generation, encoding, interpolation and NLL agree with
  the library's own paths; the exported step, sampler and encoder reproduce them in a
  process without jaxvae; the MIDI blocks of docs/API.md run."""
  import subprocess
  import sys

  import jax

  import jaxvae
  from jaxvae import errors
  from jaxvae.losses import sequence
  from jaxvae.modes import export
  from jaxvae.sampling import tokens as tokens_lib

  workdirs, _ = stages
  a, b = (os.path.join(midi_folder, f) for f in ("fast/fast_0.mid", "slow/slow_1.mid"))
  lm = jaxvae.load(str(workdirs[1]))
  assert lm.stage == 1 and lm.latent_dim is None
  windows = lm.tokens(a)
  assert windows.shape[1] == 48 and windows[0, 0] == 1  # START opens the first window
  # Stage 1's NLL is the token loss of the training objective over the piece's windows.
  logits = lm.module.apply(lm.variables, windows[:, :-1], method=lm.module.decode_tokens)
  terms = sequence.token_terms(logits, windows, np.ones(len(windows)))
  assert lm.nll(a) == pytest.approx(float(terms["nll"]), rel=1e-5)
  with pytest.raises(errors.ConfigError, match="stage 1 model"):
    lm.encode_midi(a)
  with pytest.raises(errors.ConfigError, match="MIDI model"):
    lm.features("clip.wav")
  with pytest.raises(errors.DataError, match="nope.mid"):
    lm.nll(str(tmp_path / "nope.mid"))

  mt = jaxvae.load(str(workdirs[3]))
  assert mt.stage == 3 and mt.latent_dim == 66 and "MidiModel" in repr(mt)
  piece = mt.generate(seed=3)
  assert isinstance(piece, pretty_midi.PrettyMIDI)
  z = np.random.default_rng(0).normal(size=(2, 66)).astype(np.float32)
  rows = mt.generate_tokens(seed=3, z=z, temperature=0.9)
  assert rows.shape == (2, 25)
  np.testing.assert_array_equal(rows, mt.generate_tokens(seed=3, z=z, temperature=0.9))
  assert len(mt.generate(seed=3, z=z)) == 2
  mu, logvar = mt.encode_midi(a)
  assert mu.shape == logvar.shape == (len(mt.tokens(a)), 66)
  np.testing.assert_allclose(  # the CLI's interpolation encodes the same way
    mu, tokens_lib.encode(mt.module, mt.variables, mt.tokens(a)), atol=1e-6
  )
  path = mt.interpolate_midi(a, b, steps=2, method="lerp", seed=1)  # batch 2: compiled above
  assert len(path) == 2 and all(isinstance(p, pretty_midi.PrettyMIDI) for p in path)
  nll = mt.nll(a, samples=2)
  assert np.isfinite(nll) and nll > 0

  # Export (into the run, as --mode=export does), then a fresh process without jaxvae.
  out = workdirs[3] / "export"
  out.mkdir()
  meta = export.write(mt, str(out))
  assert meta["files"] == ["step.jax_export", "sampler.jax_export", "encoder.jax_export"]
  assert meta["kind"] == "tokens" and meta["sampler"]["length"] == 25
  # The vocabulary travels with the model: the record rebuilds the run's tokenizer.
  from jaxvae.symbolic import tokenizers

  saved = json.load(open(out / "export.json"))["tokenizer"]
  assert (
    saved["fingerprint"] == mt.tokenizer.fingerprint == tokenizers.make(saved["record"]).fingerprint
  )
  key = np.asarray(jax.random.split(jax.random.PRNGKey(5))[0])  # generate_tokens' own split
  windows = mt.tokens(b)
  np.savez(tmp_path / "inputs.npz", windows=windows, z=z, key=key)
  proc = subprocess.run(
    [sys.executable, "-c", _RUN_EXPORTED, str(out), str(tmp_path)], capture_output=True, text=True
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  got = np.load(tmp_path / "got.npz")
  mu, logvar = mt.encode_midi(b)
  np.testing.assert_allclose(got["mu"], mu, atol=1e-5)
  np.testing.assert_allclose(got["logvar"], logvar, atol=1e-5)
  sampled = mt.generate_tokens(seed=5, z=z, temperature=0.9, top_p=1.0)
  np.testing.assert_array_equal(got["sampled"], sampled)
  greedy = mt.generate_tokens(seed=5, z=z, temperature=0.0)
  np.testing.assert_array_equal(got["greedy"], greedy)
  np.testing.assert_array_equal(got["stepped"], greedy)

  # docs/API.md's MIDI blocks, on these runs.
  from test_api import docs_blocks

  runs = tmp_path / "runs"
  runs.mkdir()
  os.symlink(workdirs[3], runs / "mt_stage3")
  shutil.copy(a, tmp_path / "a.mid")
  shutil.copy(b, tmp_path / "b.mid")
  cwd = os.getcwd()
  os.chdir(tmp_path)
  try:
    namespace: dict = {}
    blocks = docs_blocks(lambda block: "mt_stage3" in block)
    assert len(blocks) == 2
    for block in blocks:
      exec(compile(block, "docs/API.md", "exec"), namespace)  # noqa: S102 - the docs' code
  finally:
    os.chdir(cwd)
  assert isinstance(namespace["piece"], pretty_midi.PrettyMIDI)
  assert np.asarray(namespace["tokens"]).shape == (2, 25)


def _store(cache, midi_folder, **overrides):
  from jaxvae.data import tokens
  from jaxvae.variants import registry

  base = {
    "data.layout": "folder",
    "data.root": midi_folder,
    "data.cache_dir": str(cache),
    "data.midi.seq_len": "48",
    "data.midi.overlap": "8",
    "data.val_fraction": "0.3",
  }
  config = registry.load_config(
    os.path.join(ROOT, "configs", "music_transformer_vaegan.py:small"), base | overrides
  )
  return tokens.build(config, progress=False)


def test_token_store_tempo_and_velocity_augmentation(tmp_path, midi_folder):
  from jaxvae.errors import ConfigError
  from jaxvae.symbolic import midi

  plain = _store(tmp_path, midi_folder)
  aug_overrides = {
    "data.midi.tempo_stretch": "(0.5, 2.0)",
    "data.midi.velocity_jitter": "2",
    "data.midi.velocity_copies": "2",
  }
  aug = _store(tmp_path, midi_folder, **aug_overrides)
  assert aug.path != plain.path  # the augmentation is part of the store's key
  rows = aug.manifest["examples"]
  # Validation windows and the training originals are untouched; 4 copies of each training one.
  n_train = len(plain.indices("train"))
  assert len(plain.indices("validation")) > 0 and n_train > 0
  assert len(aug.features) == len(plain.features) + 4 * n_train
  np.testing.assert_array_equal(
    aug.features[aug.indices("validation")], plain.features[plain.indices("validation")]
  )
  np.testing.assert_array_equal(
    aug.features[aug.indices("train", augmented=False)], plain.features[plain.indices("train")]
  )
  assert all(rows[i]["augment"] is None for i in aug.indices("validation"))

  def copy_of(clip, record):
    return aug.features[
      [i for i, r in enumerate(rows) if r["clip_id"] == clip and r["augment"] == record]
    ]

  train_clips = sorted({r["clip_id"] for r in rows if r["split"] == "train"})
  for record in (
    {"tempo_stretch": 0.5},
    {"tempo_stretch": 2.0},
    {"velocity_jitter": 2, "copy": 0},
    {"velocity_jitter": 2, "copy": 1},
  ):
    assert sorted({r["clip_id"] for r in rows if r["augment"] == record}) == train_clips
  clip = train_clips[0]
  orig = copy_of(clip, None)[0]
  v = midi.DEFAULT

  def seconds(window):
    shift = (window >= v.time_shift_offset) & (window < v.velocity_offset)
    return np.sum(window[shift] - v.time_shift_offset + 1) * v.step_s

  assert seconds(copy_of(clip, {"tempo_stretch": 2.0})[0]) == pytest.approx(2 * seconds(orig))
  is_vel = (orig >= v.velocity_offset) & (orig < v.sustain_offset)
  jit0 = copy_of(clip, {"velocity_jitter": 2, "copy": 0})[0]
  jit1 = copy_of(clip, {"velocity_jitter": 2, "copy": 1})[0]
  np.testing.assert_array_equal(jit0[~is_vel], orig[~is_vel])
  assert np.abs(jit0[is_vel] - orig[is_vel]).max() <= 2 and np.any(jit0 != orig)
  assert np.any(jit0 != jit1)
  # Seeded: a fresh build gives the same windows.
  again = _store(tmp_path / "again", midi_folder, **aug_overrides)
  np.testing.assert_array_equal(np.asarray(again.features), np.asarray(aug.features))
  with pytest.raises(ConfigError, match="data.midi.tempo_stretch"):
    _store(tmp_path, midi_folder, **{"data.midi.tempo_stretch": "(0.0,)"})


def test_chorales_corpus_is_offline(tmp_path, cache_dir):
  pytest.importorskip("music21")
  from conftest import ROOT
  from jaxvae.data import tokens
  from jaxvae.variants import registry

  config = registry.load_config(
    os.path.join(ROOT, "configs", "music_transformer_vaegan.py:small"),
    {"data.midi.chorales": "3", "data.cache_dir": str(tmp_path)},
  )
  store = tokens.build(config, progress=False)
  assert store.features.shape[1] == 128 and len(store.features) >= 3
  assert store.features[0][0] == 1  # START opens the first window of a piece
  shutil.rmtree(tmp_path, ignore_errors=True)
