"""MidiTok's tokenizations beside the seed's events (jaxvae/symbolic/tokenizers.py): exact round
trips at each tokenizer's resolution (drums included), a learned BPE vocabulary saved and
reloaded, ids that do not decode skipped with a count, bar-aligned windows, augmentation made
before tokenizing, NLL per note; and a REMI + BPE run through the MIDI family: resume bitwise,
generation, interpolation, eval and the API, with a store of another tokenizer refused in one
line."""

import collections
import json

import numpy as np
import pretty_midi
import pytest
from test_faults import _killed
from test_faults import _train_args
from test_faults import assert_same_checkpoints
from test_midi import REAL_FILES
from test_midi import _build_multi_instrument_file
from test_music import CFG
from test_music import TINY
from test_music import _piece
from test_train import _cli

from jaxvae import errors
from jaxvae.symbolic import midi
from jaxvae.symbolic import tokenizers

MIDITOK_KINDS = ("remi", "tsd", "midi_like")


def _settings(kind, vocab_size=0):
  return {
    "kind": kind,
    "beat_res": 8,
    "num_velocities": 32,
    "tempos": True,
    "num_tempos": 32,
    "programs": True,
    "drums": True,
    "vocab_size": vocab_size,
    "vocab_model": "BPE" if vocab_size else "",
  }


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """The MIDI files shipped in pretty_midi / mido / music21 and a multi-instrument file with
  drums, tempo changes and a pedal (tests/test_midi.py)."""
  multi = str(tmp_path_factory.mktemp("tok") / "multi.mid")
  return [*REAL_FILES, _build_multi_instrument_file(multi)]


@pytest.fixture(scope="module")
def trained(files):
  """Each MidiTok kind with a BPE vocabulary of 200 ids more than its base, learned on the
  first ten files."""
  out = {}
  for kind in MIDITOK_KINDS:
    base = tokenizers.make(_settings(kind)).vocab_size
    tok = tokenizers.make(_settings(kind, base + 200))
    tok.train(files[:10])
    out[kind] = tok
  return out


def _beat_notes(score) -> collections.Counter:
  tpq = score.ticks_per_quarter
  return collections.Counter(
    (t.is_drum, 0 if t.is_drum else t.program, n.pitch, n.time / tpq, n.duration / tpq)
    for t in score.tracks
    for n in t.notes
  )


def _f1(reference, estimate, drums: bool) -> float:
  """mir_eval's onset + offset note F1 of two PrettyMIDI pieces' drum or melodic notes."""
  from mir_eval import transcription

  def notes(pm):
    rows = [
      (n.start, n.end, n.pitch) for i in pm.instruments if i.is_drum == drums for n in i.notes
    ]
    rows = np.asarray(rows, np.float64).reshape(-1, 3)
    return rows[:, :2], 440.0 * 2.0 ** ((rows[:, 2] - 69.0) / 12.0)

  (ri, rp), (ei, ep) = notes(reference), notes(estimate)
  if not len(rp) and not len(ep):
    return 1.0
  return transcription.precision_recall_f1_overlap(ri, rp, ei, ep)[2]


@pytest.mark.parametrize("learned", [False, True], ids=["base", "bpe"])
@pytest.mark.parametrize("kind", MIDITOK_KINDS)
def test_every_tokenization_round_trips_the_files_at_its_resolution(kind, learned, files, trained):
  """Decoding a file's ids gives back exactly the notes the tokenizer read (MidiTok's
  quantization of the file): the same beats, lengths, pitches and programs, drums included;
  note F1 (onsets and offsets, mir_eval) 1.0 for melodic and drum notes."""
  tok = trained[kind] if learned else tokenizers.make(_settings(kind))
  drums_seen = 0
  for path in files:
    read, _, _ = tok.quantized(path)
    encoded = tok.encode(path)
    decoded, skipped = tok.decode_score(encoded.ids)
    assert skipped == 0, path
    assert _beat_notes(decoded) == _beat_notes(read), path
    assert encoded.notes == sum(len(t.notes) for t in read.tracks)
    assert int(tok.onsets_per_id()[encoded.ids].sum()) == encoded.notes
    ref, est = tokenizers._to_pretty_midi(read), tok.decode(encoded.ids)
    assert _f1(ref, est, drums=False) == 1.0 and _f1(ref, est, drums=True) == 1.0, path
    drums_seen += sum(len(i.notes) for i in est.instruments if i.is_drum)
  assert drums_seen > 0
  if learned:  # the learned vocabulary shortens every sequence it was trained on
    base = tokenizers.make(_settings(kind))
    assert len(tok.encode(files[0]).ids) < len(base.encode(files[0]).ids)


def test_a_learned_vocabulary_saved_and_reloaded_gives_the_same_ids(files, trained):
  for kind, tok in trained.items():
    record = json.loads(json.dumps(tok.record))  # what a store and a run file keep
    again = tokenizers.make(record)
    assert again.vocab_size == tok.vocab_size == len(tok.tok)
    assert again.fingerprint == tok.fingerprint
    for path in files:
      np.testing.assert_array_equal(again.encode(path).ids, tok.encode(path).ids)
    relearned = tokenizers.make(_settings(kind, tok.settings["vocab_size"]))
    relearned.train(files[:10])
    assert relearned.fingerprint == tok.fingerprint  # learning is deterministic


def test_a_unigram_vocabulary_round_trips_and_reloads(files):
  settings = _settings("tsd", 700) | {"vocab_model": "Unigram"}
  tok = tokenizers.make(settings)
  tok.train(files[:10])
  assert tok.trained and tok.vocab_size == 700 and tok.describe().startswith("tsd (Unigram 700")
  again = tokenizers.make(json.loads(json.dumps(tok.record)))
  for path in files[:5]:
    encoded = tok.encode(path)
    decoded, skipped = tok.decode_score(encoded.ids)
    assert skipped == 0 and _beat_notes(decoded) == _beat_notes(tok.quantized(path)[0])
    np.testing.assert_array_equal(again.encode(path).ids, encoded.ids)


@pytest.mark.parametrize("kind", ("events", *MIDITOK_KINDS))
def test_ids_that_do_not_decode_are_skipped_and_counted(kind, trained, files):
  tok = trained.get(kind) or tokenizers.make({"kind": "events"})
  rng = np.random.default_rng(0)
  for _ in range(5):
    noise = rng.integers(-3, tok.vocab_size + 3, size=300)
    piece, skipped = tok.decode_counted(noise)
    assert isinstance(piece, pretty_midi.PrettyMIDI) and skipped >= 0
    if kind != "events":  # any id sequence is a valid events stream
      assert skipped > 0
  ids = tok.encode(files[-1]).ids
  whole = tok.decode(ids)
  cut, skipped = tok.decode_counted(np.concatenate([[tokenizers.START], ids[:40], [2], ids[40:]]))
  assert skipped == 0
  n = lambda pm: sum(len(i.notes) for i in pm.instruments)
  assert 0 < n(cut) < n(whole)  # decoding stops at END


def test_windows_can_start_on_bars(files):
  path = files[-1]  # the multi-instrument file: 4/4, three tempos
  remi = tokenizers.make(_settings("remi"))
  encoded = remi.encode(path)
  # Bars of this file are 131 tokens long: windows of 160 start on every one after the first.
  windows = tokenizers.windows(encoded.ids, 160, 16, encoded.bars)
  assert len(windows) == 3 and windows[0, 0] == tokenizers.START
  assert all(remi.tok[int(w[0])] == "Bar_None" for w in windows[1:])
  assert windows[-1][windows[-1] != tokenizers.PAD][-1] == tokenizers.END
  covered = np.concatenate([w[w > tokenizers.END] for w in windows])
  assert set(covered.tolist()) == set(encoded.ids.tolist())  # nothing falls between windows

  # A first bar longer than the stride: the next window starts off the bars, not one id on.
  assert tokenizers.window_starts(1000, 256, 64, [0, 400, 800])[:2] == [0, 192]

  events = tokenizers.make({"kind": "events"})
  encoded = events.encode(path)
  downbeats = pretty_midi.PrettyMIDI(path).get_downbeats()
  times = midi.token_times(encoded.ids)
  starts = tokenizers.window_starts(len(encoded.ids), 160, 8, encoded.bars)  # bars: ~145 ids
  assert len(starts) > 2
  for s in starts[1:]:  # each later window opens at a downbeat (s - 1: after START)
    assert np.min(np.abs(downbeats - times[s - 1])) < midi.DEFAULT.step_s


def test_augmentation_is_made_before_tokenizing(files):
  path = files[-1]
  tok = tokenizers.make(_settings("remi"))
  plain = tok.decode(tok.encode(path).ids)
  up = tok.decode(tok.encode(path, {"transpose": 2}).ids)
  pitches = lambda pm, drum: sorted(
    n.pitch for i in pm.instruments if i.is_drum == drum for n in i.notes
  )
  assert pitches(up, True) == pitches(plain, True)  # a drum pitch is an instrument
  assert pitches(up, False) == sorted(p + 2 for p in pitches(plain, False))
  slow = tok.decode(tok.encode(path, {"tempo_stretch": 1.25}).ids)
  ratio = slow.get_end_time() / plain.get_end_time()
  assert 1.15 < ratio < 1.35  # slower by the factor, up to the tempo bins
  jittered = tok.encode(path, {"velocity_jitter": 1}, np.random.default_rng(0))
  assert jittered.notes == tok.encode(path).notes
  v = lambda pm: [n.velocity for i in pm.instruments for n in i.notes]
  assert v(tok.decode(jittered.ids)) != v(plain)


def test_nll_per_note_is_nll_per_token_times_tokens_per_note(files, trained):
  from jaxvae.evaluators import music

  for tok in (tokenizers.make({"kind": "events"}), trained["remi"]):
    encoded = tok.encode(files[-1])
    windows = tokenizers.windows(encoded.ids, len(encoded.ids) + 2, 0)  # the piece in one
    got = music.per_note(1.7, windows, tok)
    targets = len(encoded.ids) + 1  # every id and the END; START is never a target
    assert got["tokens_per_note"] == pytest.approx(targets / encoded.notes)
    assert got["nll_per_note"] == pytest.approx(1.7 * got["tokens_per_note"])


def test_bad_tokenizer_settings_are_one_config_error():
  from jaxvae.config import base

  m = base.midi_data()
  m.tokenizer = "abc"
  with pytest.raises(errors.ConfigError, match="data.midi.tokenizer"):
    tokenizers.settings(m)
  m.tokenizer, m.vocab_size = "events", 500
  with pytest.raises(errors.ConfigError, match="data.midi.vocab_size"):
    tokenizers.settings(m)
  m.tokenizer, m.miditok.beat_res = "remi", 0
  with pytest.raises(errors.ConfigError, match="data.midi.miditok.beat_res"):
    tokenizers.settings(m)
  small = tokenizers.make(_settings("tsd", 10))
  with pytest.raises(errors.ConfigError, match="larger than"):
    small.train(REAL_FILES[:2])
  from conftest import load_config
  from jaxvae.data import tokens
  from jaxvae.data.spec import DataSpec
  from jaxvae.models import transformer

  config = load_config(
    CFG,
    {
      "data.midi.tokenizer": "remi",
      "data.midi.miditok.tempos": "False",
      "data.midi.tempo_stretch": "(0.95, 1.05)",
    },
  )
  with pytest.raises(errors.ConfigError, match="data.midi.tempo_stretch"):
    tokens.token_params(config)  # beats would not move: copies equal to the original
  spec = DataSpec((48,), tokenizer=tokenizers.make(_settings("remi")))
  with pytest.raises(errors.ConfigError, match="model.vocab_size' is 774.*has 518 ids"):
    transformer.config_from(dict(config.model.to_dict(), vocab_size=774), spec)


# ----------------------------------------------------------------------------- a REMI + BPE run


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory, cache_dir):
  """A stage-2 VAE on REMI with a learned BPE vocabulary, 2 epochs, and its overrides."""
  root = tmp_path_factory.mktemp("bpe_midi")
  for k in range(6):
    _piece(root / f"piece_{k}.mid", 100 + k)
  (root / "broken.mid").write_bytes(b"MThd garbage")
  overrides = TINY | {
    "data.layout": "folder",
    "data.root": str(root),
    "data.cache_dir": cache_dir,
    "data.midi.tokenizer": "remi",
    "data.midi.vocab_size": "560",
    "data.midi.window_start": "bar",
    "model.disc_scales": "(1,)",
    "stage": "2",
    "train.epochs": "2",
    "train.max_steps": "0",
    "train.num_devices": "1",
  }
  workdir = tmp_path_factory.mktemp("bpe_run")
  assert _cli(workdir, overrides, config=CFG) == 0
  return workdir, overrides, root


def test_a_bpe_run_records_its_vocabulary_and_resumes_bitwise(bpe_run, tmp_path):
  workdir, overrides, _ = bpe_run
  data = json.load(open(workdir / "jaxvae_run.json"))["data"]
  assert data["bad_files"] == 1 and data["bad"][0]["clip_id"] == "broken.mid"
  record = data["tokenizer"]["record"]
  tok = tokenizers.make(record)
  assert tok.kind == "remi" and tok.trained and tok.vocab_size == 560
  assert data["tokenizer"]["fingerprint"] == tok.fingerprint
  resumed = tmp_path / "resumed"
  _killed(_train_args(resumed, overrides, CFG), "checkpoint.issued", 2)
  assert _cli(resumed, overrides, config=CFG) == 0
  assert_same_checkpoints(str(resumed), str(workdir))


def test_a_bpe_run_generates_interpolates_and_evaluates(bpe_run, capsys):
  workdir, overrides, root = bpe_run
  assert _cli(workdir, overrides, mode="generate", config=CFG, extra=["--num_samples=3"]) == 0
  for k in range(3):
    pretty_midi.PrettyMIDI(str(workdir / "generate" / f"sample_{k:02d}.mid"))
  a, b = root / "piece_0.mid", root / "piece_1.mid"
  assert (
    _cli(workdir, overrides, mode="generate", config=CFG, extra=[f"--interpolate={a},{b}"]) == 0
  )
  assert json.load(open(workdir / "generate" / "interp.json"))["steps"] == 3
  assert _cli(workdir, overrides, mode="eval", config=CFG) == 0
  m = json.load(open(workdir / "eval" / "metrics.json"))
  assert m["generation"]["tokenizer"].startswith("remi (BPE 560 ids")
  assert m["generation"]["undecodable_tokens"] >= 0
  val = m["val"]
  assert val["nll_per_note"] == pytest.approx(val["nll"] * val["tokens_per_note"])
  # The same workdir on another tokenizer: one line naming both, nothing trained.
  capsys.readouterr()
  other = overrides | {"data.midi.tokenizer": "tsd"}
  assert _cli(workdir, other, config=CFG) == 1
  err = capsys.readouterr().err
  assert "trained on the tokenizer remi (BPE 560 ids" in err and "tsd" in err
  assert "Traceback" not in err


def test_the_api_uses_the_runs_vocabulary(bpe_run):
  import jaxvae

  workdir, _, root = bpe_run
  model = jaxvae.load(str(workdir))
  assert model.tokenizer.kind == "remi" and model.tokenizer.vocab_size == 560
  windows = model.tokens(str(root / "piece_2.mid"))
  assert windows.shape[1] == int(TINY["data.midi.seq_len"]) and windows.max() < 560
  piece = model.generate(n_tokens=20, seed=1)
  assert isinstance(piece, pretty_midi.PrettyMIDI)
  mu, _ = model.encode_midi(str(root / "piece_2.mid"))
  assert mu.shape == (len(windows), model.latent_dim)
  assert len(model.interpolate_midi(str(root / "piece_0.mid"), windows, steps=2, n_tokens=10)) == 2
  per_token = model.nll(str(root / "piece_2.mid"), samples=1)
  per_note = model.nll(str(root / "piece_2.mid"), samples=1, per="note")
  targets = np.count_nonzero(windows[:, 1:] != tokenizers.PAD)
  notes = model.tokenizer.onsets_per_id()[windows[:, 1:]].sum()
  assert per_note == pytest.approx(per_token * targets / notes, rel=1e-5)
