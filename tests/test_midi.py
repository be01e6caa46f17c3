"""Tests of jaxvae.symbolic.midi: vocabulary layout, MIDI round trips, bad files, windows,
augmentation.

Real MIDI files: every *.mid shipped inside the installed pretty_midi / mido / music21
packages (music21 ships ~23), plus a multi-instrument file built here with mido (drums,
sustain pedal, tempo changes, a long gap, an out-of-range pitch).
"""

import glob
import importlib.util
import os
import sys

import mido
import numpy as np
import pretty_midi
import pytest

from jaxvae import errors
from jaxvae.symbolic import midi

V = midi.DEFAULT
DT = V.step_s
EPS = 1e-6


# ----------------------------------------------------------------------------- helpers


def _package_midi_files():
  files = []
  for package in ("pretty_midi", "mido", "music21"):
    spec = importlib.util.find_spec(package)
    for root in (spec.submodule_search_locations or []) if spec else []:
      for ext in ("mid", "midi"):
        files += glob.glob(os.path.join(root, "**", f"*.{ext}"), recursive=True)
  return sorted(files)


REAL_FILES = _package_midi_files()


def _family(inst):
  """The expected INSTRUMENT id, written independently of midi.Vocab.family."""
  if inst.is_drum:
    return 15
  return min(inst.program // 8, 14)


def _notes_by_key(pm, in_range_only=True):
  """(family, pitch) -> notes sorted by (start, end)."""
  out = {}
  for inst in pm.instruments:
    for n in inst.notes:
      if in_range_only and not 21 <= n.pitch <= 108:
        continue
      out.setdefault((_family(inst), n.pitch), []).append(n)
  return {k: sorted(v, key=lambda n: (n.start, n.end)) for k, v in out.items()}


def _vel_bin(v):
  return (min(max(v, 1), 127) - 1) // 4


def _assert_note_close(orig, dec):
  assert abs(dec.start - orig.start) <= DT / 2 + EPS, (orig, dec)
  assert abs((dec.end - dec.start) - (orig.end - orig.start)) <= DT + EPS, (orig, dec)
  assert _vel_bin(dec.velocity) == _vel_bin(orig.velocity), (orig, dec)


def _assert_round_trip(orig_pm, dec_pm, stats):
  """Every decoded note is an original note within tolerance; none lost without count."""
  orig, dec = _notes_by_key(orig_pm), _notes_by_key(dec_pm)
  n_orig = sum(map(len, orig.values()))
  n_dec = sum(map(len, dec.values()))
  assert n_dec == stats.notes == n_orig - stats.dropped_zero_length
  assert set(dec) <= set(orig)
  for key, notes in dec.items():
    if stats.overlaps_closed == 0:  # nothing merged: notes pair up one to one
      assert len(notes) == len(orig[key])
      for o, d in zip(orig[key], notes):
        _assert_note_close(o, d)
      continue
    # Overlapping same-pitch notes were merged: each decoded note must be explained
    # by an original note with the same onset and velocity bin, either with the same
    # duration or cut short by the onset of another original note of that pitch.
    onsets = np.array([o.start for o in orig[key]])
    for d in notes:
      cut_by_onset = np.any(np.abs(onsets - d.end) <= DT / 2 + EPS)
      assert any(_explains(o, d, cut_by_onset) for o in orig[key]), (key, d)


def _explains(o, d, cut_by_onset):
  if abs(o.start - d.start) > DT / 2 + EPS or _vel_bin(o.velocity) != _vel_bin(d.velocity):
    return False
  if abs((d.end - d.start) - (o.end - o.start)) <= DT + EPS:
    return True
  return cut_by_onset and d.end < o.end + DT / 2


def _build_multi_instrument_file(path):
  """A type-1 file written with mido, independent of the code under test."""
  tpb = 480
  mf = mido.MidiFile(ticks_per_beat=tpb)
  conductor = mido.MidiTrack(
    [
      mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(100), time=0),
      mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(150), time=4 * tpb),
      mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(75), time=8 * tpb),
    ]
  )
  mf.tracks.append(conductor)

  def track(channel, program, notes, extra=()):
    """notes: (start_beat, dur_beats, pitch, velocity); extra: (beat, message)."""
    timed = [(0, mido.Message("program_change", channel=channel, program=program))]
    for start, dur, pitch, vel in notes:
      timed.append((start, mido.Message("note_on", channel=channel, note=pitch, velocity=vel)))
      timed.append((start + dur, mido.Message("note_off", channel=channel, note=pitch)))
    timed += list(extra)
    timed.sort(key=lambda x: (x[0], x[1].type == "note_on"))
    out, now = mido.MidiTrack(), 0
    for beat, msg in timed:
      tick = int(round(beat * tpb))
      out.append(msg.copy(time=tick - now))
      now = tick
    mf.tracks.append(out)

  piano = [(i * 0.5, 0.45, 60 + (i % 12), 20 + 7 * i) for i in range(16)]
  piano += [(8.0, 1.0, 107, 90), (8.0, 1.0, 10, 90)]  # 107 at the top, 10 out of range
  piano += [(40.0, 2.0, 64, 70)]  # after a gap of ~24 s at 75 BPM
  pedal = [
    (1.0, mido.Message("control_change", channel=0, control=64, value=127)),
    (3.0, mido.Message("control_change", channel=0, control=64, value=0)),
    (5.0, mido.Message("control_change", channel=0, control=7, value=90)),
  ]
  track(0, 0, piano, pedal)
  track(1, 33, [(i, 0.9, 36 + (i % 5), 100) for i in range(12)])  # fingered bass
  track(9, 0, [(i * 0.25, 0.1, [36, 38, 42][i % 3], 110) for i in range(48)])  # drums
  mf.save(path)
  return path


@pytest.fixture(scope="module")
def multi_file(tmp_path_factory):
  return _build_multi_instrument_file(str(tmp_path_factory.mktemp("midi") / "multi.mid"))


def _piano_drums_tokens():
  pm = pretty_midi.PrettyMIDI()
  piano = pretty_midi.Instrument(program=0)
  piano.notes = [
    pretty_midi.Note(80, p, 0.5 * i, 0.5 * i + 0.4) for i, p in enumerate([60, 64, 67, 107])
  ]
  drums = pretty_midi.Instrument(program=0, is_drum=True)
  drums.notes = [pretty_midi.Note(100, 36, 0.25 * i, 0.25 * i + 0.1) for i in range(8)]
  pm.instruments = [piano, drums]
  return pm, midi.encode(pm)


def _pitches(pm, drum):
  return sorted(n.pitch for i in pm.instruments if i.is_drum == drum for n in i.notes)


# ----------------------------------------------------------------------------- vocabulary


def test_vocab_size_and_ranges():
  assert V.size == 774
  assert (
    V.note_on_offset,
    V.note_off_offset,
    V.time_shift_offset,
    V.velocity_offset,
    V.sustain_offset,
    V.tempo_offset,
    V.instrument_offset,
  ) == (4, 92, 180, 692, 724, 726, 758)
  assert (midi.PAD, midi.START, midi.END, midi.UNK) == (0, 1, 2, 3)
  names = [midi.token_name(i) for i in range(V.size)]
  assert len(set(names)) == V.size  # every id has its own readable name
  assert names[4] == "NOTE_ON_21" and names[91] == "NOTE_ON_108"
  assert names[92] == "NOTE_OFF_21" and names[179] == "NOTE_OFF_108"
  assert names[180] == "TIME_SHIFT_15.625ms" and names[691] == "TIME_SHIFT_8000ms"
  assert names[692] == "VELOCITY_1-4" and names[723] == "VELOCITY_125-127"
  assert names[724:726] == ["SUSTAIN_ON", "SUSTAIN_OFF"]
  assert names[726] == "TEMPO_60.0" and names[757] == "TEMPO_200.0"
  assert names[758] == "INSTRUMENT_Piano" and names[773] == "INSTRUMENT_Drums"
  assert midi.token_name(774).startswith("INVALID")


def test_vocab_other_sizes_and_validation():
  small = midi.Vocab(n_time_shift=100, n_velocity=8, n_tempo=4, n_instrument=4)
  assert small.size == 4 + 88 + 88 + 100 + 8 + 2 + 4 + 4
  assert small.family(0, False) == 0 and small.family(120, False) == 2
  assert small.family(0, True) == 3
  with pytest.raises(ValueError, match="n_instrument"):
    midi.Vocab(n_instrument=1)
  with pytest.raises(ValueError, match="n_pitch"):
    midi.Vocab(pitch_min=100, n_pitch=88)


def test_velocity_bins():
  bins = [V.velocity_bin(v) for v in range(1, 128)]
  assert bins == [(v - 1) // 4 for v in range(1, 128)]
  for b in range(V.n_velocity):
    assert V.velocity_bin(V.bin_velocity(b)) == b


def test_velocity_emitted_only_on_change():
  pm = pretty_midi.PrettyMIDI()
  inst = pretty_midi.Instrument(program=0)
  velocities = [61, 62, 63, 64, 65, 127, 1]  # bins 15 15 15 15 16 31 0
  inst.notes = [pretty_midi.Note(v, 60, i, i + 0.5) for i, v in enumerate(velocities)]
  pm.instruments.append(inst)
  tokens = midi.encode(pm)
  vel = tokens[(tokens >= V.velocity_offset) & (tokens < V.sustain_offset)]
  assert (vel - V.velocity_offset).tolist() == [15, 16, 31, 0]
  decoded = [n.velocity for n in midi.decode(tokens).instruments[0].notes]
  assert [V.velocity_bin(v) for v in decoded] == [V.velocity_bin(v) for v in velocities]


def test_tempo_bins_are_log_spaced_and_clipped():
  assert V.tempo_bin(60) == 0 and V.tempo_bin(200) == 31 and V.tempo_bin(500) == 31
  assert V.tempo_bin(30) == 0
  ratios = [V.bin_tempo(b + 1) / V.bin_tempo(b) for b in range(31)]
  np.testing.assert_allclose(ratios, ratios[0])


# ----------------------------------------------------------------------------- round trips


# Some bundled files put tempo events on non-zero tracks; pretty_midi warns and copes.
@pytest.mark.filterwarnings("ignore:Tempo, Key or Time signature:RuntimeWarning")
@pytest.mark.parametrize("path", REAL_FILES, ids=os.path.basename)
def test_round_trip_real_files(path):
  tokens, stats = midi.encode(path, return_stats=True)
  assert tokens.dtype == np.int32 and tokens.min() >= 0 and tokens.max() < V.size
  decoded = midi.decode(tokens)
  _assert_round_trip(pretty_midi.PrettyMIDI(path), decoded, stats)
  # Decoding is the inverse of encoding on the grid: re-encoding gives the same ids.
  np.testing.assert_array_equal(midi.encode(decoded), tokens)


def test_real_files_were_found():
  """The round-trip test above must not pass vacuously where music21 is installed."""
  if importlib.util.find_spec("music21") is None:
    pytest.skip("music21 not installed: no bundled MIDI files")
  assert len(REAL_FILES) >= 10


def test_multi_instrument_round_trip(multi_file, tmp_path):
  tokens, stats = midi.encode(multi_file, return_stats=True)
  orig = pretty_midi.PrettyMIDI(multi_file)
  decoded = midi.decode(tokens)
  _assert_round_trip(orig, decoded, stats)
  assert stats.dropped_out_of_range == 1  # pitch 10
  assert stats.dropped_control_changes == 1  # CC7 volume
  got = sorted((i.program, i.is_drum) for i in decoded.instruments)
  assert got == [(0, False), (0, True), (32, False)]
  drums = next(i for i in decoded.instruments if i.is_drum)
  assert sorted({n.pitch for n in drums.notes}) == [36, 38, 42] and len(drums.notes) == 48

  # Sustain pedal: on at beat 1, off at beat 3 (100 BPM).
  piano = next(i for i in decoded.instruments if i.program == 0 and not i.is_drum)
  pedal = [(c.number, c.time, c.value >= 64) for c in piano.control_changes]
  assert [(num, on) for num, _, on in pedal] == [(64, True), (64, False)]
  np.testing.assert_allclose([t for _, t, _ in pedal], [0.6, 1.8], atol=DT / 2)

  # Tempo changes survive as bins, at the right times.
  o_times, o_bpm = orig.get_tempo_changes()
  d_times, d_bpm = decoded.get_tempo_changes()
  np.testing.assert_allclose(d_times, o_times, atol=DT / 2)
  assert [V.tempo_bin(b) for b in d_bpm] == [V.tempo_bin(b) for b in o_bpm]

  # Writing to disk and reading back changes nothing on the grid.
  out = str(tmp_path / "decoded.mid")
  decoded.write(out)
  np.testing.assert_array_equal(midi.encode(out), tokens)


def test_long_gap_uses_several_time_shifts(multi_file):
  tokens = midi.encode(multi_file)
  longest = V.time_shift_offset + V.n_time_shift - 1
  runs, run = [], 0
  for t in tokens:
    run = run + 1 if V.time_shift_offset <= t < V.velocity_offset else 0
    runs.append(run)
  assert max(runs) >= 3  # the gap is > 16 s: at least two full 8 s shifts and the rest
  assert (tokens == longest).sum() >= 2
  last = max(n.start for i in midi.decode(tokens).instruments for n in i.notes)
  orig_last = max(n.start for i in pretty_midi.PrettyMIDI(multi_file).instruments for n in i.notes)
  assert orig_last > 16 and abs(last - orig_last) <= DT / 2 + EPS


def test_overlapping_same_pitch_notes_are_closed():
  pm = pretty_midi.PrettyMIDI()
  inst = pretty_midi.Instrument(program=0)
  inst.notes = [
    pretty_midi.Note(80, 60, 0.0, 2.0),
    pretty_midi.Note(90, 60, 1.0, 3.0),
    pretty_midi.Note(70, 62, 0.5, 1.0),
    pretty_midi.Note(70, 62, 0.5, 1.5),
  ]
  pm.instruments.append(inst)
  tokens, stats = midi.encode(pm, return_stats=True)
  notes = sorted((n.pitch, n.start, n.end) for n in midi.decode(tokens).instruments[0].notes)
  assert notes == [(60, 0.0, 1.0), (60, 1.0, 3.0), (62, 0.5, 1.5)]
  assert (stats.overlaps_closed, stats.dropped_zero_length, stats.notes) == (2, 1, 3)


def test_decode_ignores_specials_and_stops_at_end():
  tokens = [
    midi.START,
    V.note_on_offset + 39,
    V.time_shift_offset + 63,
    midi.PAD,
    midi.UNK,
    V.note_off_offset + 39,
    midi.END,
    V.note_on_offset + 40,
  ]
  notes = midi.decode(tokens).instruments[0].notes
  assert [(n.pitch, n.start, n.end) for n in notes] == [(60, 0.0, 1.0)]


# ----------------------------------------------------------------------------- bad files


def test_corrupt_midi_raises_midi_error_naming_the_file(tmp_path):
  rng = np.random.default_rng(0)
  bad = tmp_path / "random_bytes.mid"
  bad.write_bytes(rng.integers(0, 256, 2000, dtype=np.uint8).tobytes())
  with pytest.raises(errors.MidiError, match="random_bytes.mid") as info:
    midi.encode(bad)
  assert info.value.path == str(bad) and info.value.reason

  truncated = tmp_path / "truncated.mid"
  truncated.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\x00\x00\x01\x00\x90")
  with pytest.raises(errors.MidiError, match="truncated.mid"):
    midi.encode(truncated)


def test_empty_and_missing_files(tmp_path):
  empty = tmp_path / "empty.mid"
  empty.write_bytes(b"")
  with pytest.raises(errors.MidiError, match="empty.mid"):
    midi.encode(empty)
  no_notes = tmp_path / "no_notes.mid"
  pretty_midi.PrettyMIDI().write(str(no_notes))
  with pytest.raises(errors.MidiError, match="no notes"):
    midi.encode(no_notes)
  with pytest.raises(errors.MidiError, match="no such file"):
    midi.encode(tmp_path / "missing.mid")


# ----------------------------------------------------------------------------- windows


def test_windows_shapes_and_framing():
  tokens = np.arange(100, 110)
  w = midi.windows(tokens, seq_len=4, overlap=1)  # START + 10 + END = 12 ids, stride 3
  assert w.shape == (4, 4) and w.dtype == np.int32
  assert w[0, 0] == midi.START
  np.testing.assert_array_equal(w[:-1, -1], w[1:, 0])  # one shared id between windows
  flat = np.concatenate([w[0]] + [row[1:] for row in w[1:]])
  np.testing.assert_array_equal(flat[:12], np.r_[midi.START, tokens, midi.END])
  assert (flat[12:] == midi.PAD).all() and len(flat) == 13

  short = midi.windows([5, 6], seq_len=8, overlap=2)
  np.testing.assert_array_equal(short, [[1, 5, 6, 2, 0, 0, 0, 0]])
  exact = midi.windows(np.arange(10, 16), seq_len=8)
  assert exact.shape == (1, 8) and exact[0, -1] == midi.END
  assert midi.windows(np.arange(10, 17), seq_len=8).shape == (2, 8)
  with pytest.raises(ValueError, match="overlap"):
    midi.windows(tokens, seq_len=4, overlap=4)


def test_windows_on_a_real_piece(multi_file):
  tokens = midi.encode(multi_file)
  w = midi.windows(tokens, seq_len=64, overlap=16)
  stride = 48
  assert w.shape == (1 + -(-(len(tokens) + 2 - 64) // stride), 64)
  assert (w == midi.END).sum() == 1 and (w == midi.START).sum() == 1


# ----------------------------------------------------------------------------- augmentation


def test_transpose_moves_melody_not_drums_and_drops_out_of_range():
  pm, tokens = _piano_drums_tokens()
  up = midi.decode(midi.transpose(tokens, 2))
  assert _pitches(up, drum=False) == [62, 66, 69]  # 107 + 2 > 108: dropped
  assert _pitches(up, drum=True) == [36] * 8
  down = midi.decode(midi.transpose(tokens, -5))
  assert _pitches(down, drum=False) == [55, 59, 62, 102]
  np.testing.assert_array_equal(midi.transpose(tokens, 0), tokens)
  # The dropped note leaves no orphan NOTE_OFF behind.
  t = midi.transpose(tokens, 2)
  assert ((t >= V.note_on_offset) & (t < V.note_off_offset)).sum() == (
    (t >= V.note_off_offset) & (t < V.time_shift_offset)
  ).sum()


def test_stretch_tempo_scales_times(multi_file):
  tokens = midi.encode(multi_file)
  np.testing.assert_array_equal(midi.stretch_tempo(tokens, 1.0), tokens)
  base = midi.decode(tokens)
  slow = midi.decode(midi.stretch_tempo(tokens, 2.0))
  b = sorted((n.start, n.end, n.pitch) for i in base.instruments for n in i.notes)
  s = sorted((n.start, n.end, n.pitch) for i in slow.instruments for n in i.notes)
  np.testing.assert_allclose(np.array(s), np.array(b) * [2, 2, 1], atol=EPS)
  b_bpm, s_bpm = base.get_tempo_changes()[1], slow.get_tempo_changes()[1]
  assert [V.tempo_bin(x) for x in s_bpm] == [V.tempo_bin(x / 2) for x in b_bpm]

  fast = midi.decode(midi.stretch_tempo(tokens, 0.7))
  f = sorted((n.start, n.end, n.pitch) for i in fast.instruments for n in i.notes)
  # Rounded from absolute times: every time within half a step, however long the piece.
  np.testing.assert_allclose(np.array(f)[:, :2], np.array(b)[:, :2] * 0.7, atol=DT / 2 + EPS)
  with pytest.raises(ValueError):
    midi.stretch_tempo(tokens, 0)


def test_jitter_velocity():
  _, tokens = _piano_drums_tokens()
  tokens = np.tile(tokens, 20)
  is_vel = (tokens >= V.velocity_offset) & (tokens < V.sustain_offset)
  rng = np.random.default_rng(0)
  out = midi.jitter_velocity(tokens, rng, max_bins=2)
  np.testing.assert_array_equal(out[~is_vel], tokens[~is_vel])
  delta = out[is_vel].astype(int) - tokens[is_vel]
  assert np.abs(delta).max() <= 2 and np.any(delta != 0)
  assert out[is_vel].min() >= V.velocity_offset and out[is_vel].max() < V.sustain_offset
  np.testing.assert_array_equal(midi.jitter_velocity(tokens, rng, max_bins=0), tokens)
  top = np.array([V.velocity_offset + 31] * 50)
  assert midi.jitter_velocity(top, rng, max_bins=3).max() == V.velocity_offset + 31


# ----------------------------------------------------------------------------- chorales tool


def test_make_chorales_tool(tmp_path):
  pytest.importorskip("music21")
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
  try:
    import make_chorales  # pylint: disable=import-outside-toplevel
  finally:
    sys.path.pop(0)
  summary = make_chorales.main(["--out", str(tmp_path), "--limit", "1"])
  assert summary["written"] == 1 and not summary["failed"]
  (path,) = glob.glob(str(tmp_path / "*.mid"))
  tokens, stats = midi.encode(path, return_stats=True)
  assert stats.notes > 50  # a four-part chorale
  _assert_round_trip(pretty_midi.PrettyMIDI(path), midi.decode(tokens), stats)
