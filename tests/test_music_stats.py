"""Music statistics on hand-made pieces with known answers."""

import numpy as np
import pytest

from jaxvae.symbolic import stats as music_stats

pretty_midi = pytest.importorskip("pretty_midi")


def _piece(notes, drums=()):
  """notes: (pitch, start, end) rows on a piano; drums: the same on a drum kit."""
  pm = pretty_midi.PrettyMIDI()
  for rows, is_drum in ((notes, False), (drums, True)):
    if rows:
      inst = pretty_midi.Instrument(program=0, is_drum=is_drum)
      inst.notes = [pretty_midi.Note(90, p, s, e) for p, s, e in rows]
      pm.instruments.append(inst)
  return pm


TRIAD = [(60, 0.0, 1.0), (64, 0.0, 1.0), (67, 0.0, 1.0)]


def test_c_major_triad_held_one_second():
  s = music_stats.piece_stats(_piece(TRIAD, drums=[(36, 0.0, 0.1), (38, 0.5, 0.6)]))
  hist = s["pitch_class_histogram"]
  assert np.flatnonzero(hist).tolist() == [0, 4, 7]
  np.testing.assert_allclose(hist[[0, 4, 7]], 1 / 3)
  assert s["polyphony"] == pytest.approx(3.0) and s["polyphony_max"] == 3
  assert s["note_density"] == pytest.approx(3.0)  # drums are not counted
  assert s["pitch_range"] == 7 and s["mean_duration"] == pytest.approx(1.0)


def test_polyphony_ignores_rests_and_touching_notes():
  legato = [(60, 0.0, 0.5), (62, 0.5, 1.0), (64, 1.0, 1.5), (65, 1.5, 2.0)]
  s = music_stats.piece_stats(_piece(legato))
  assert s["polyphony"] == pytest.approx(1.0) and s["polyphony_max"] == 1
  assert s["note_density"] == pytest.approx(2.0)
  gap = [(60, 0.0, 1.0), (62, 2.0, 3.0)]
  s = music_stats.piece_stats(_piece(gap))
  assert s["polyphony"] == pytest.approx(1.0)  # the rest does not count
  assert s["note_density"] == pytest.approx(2 / 3)
  # Two notes overlapping for 1 s of 3 s sounding: (1 + 2 + 1) / 3.
  s = music_stats.piece_stats(_piece([(60, 0.0, 2.0), (67, 1.0, 3.0)]))
  assert s["polyphony"] == pytest.approx(4 / 3) and s["polyphony_max"] == 2


def test_pitch_class_weighting():
  notes = [(60, 0.0, 3.0), (79, 3.0, 4.0)]  # C for 3 s, G (an octave up) for 1 s
  dur = music_stats.piece_stats(_piece(notes))["pitch_class_histogram"]
  cnt = music_stats.piece_stats(_piece(notes), weight="count")["pitch_class_histogram"]
  np.testing.assert_allclose(dur[[0, 7]], [0.75, 0.25])
  np.testing.assert_allclose(cnt[[0, 7]], [0.5, 0.5])
  assert dur.sum() == pytest.approx(1.0)
  with pytest.raises(ValueError):
    music_stats.piece_stats(_piece(notes), weight="velocity")


def test_token_arrays_are_decoded():
  from jaxvae.symbolic import midi

  s = music_stats.piece_stats(midi.encode(_piece(TRIAD)))
  assert s["polyphony"] == pytest.approx(3.0) and s["pitch_range"] == 7
  assert music_stats.piece_stats(_piece([], drums=[(36, 0.0, 1.0)])) is None


def test_set_summary_counts_empty_pieces():
  f = music_stats.set_features([_piece(TRIAD), _piece([]), _piece([(62, 0.0, 2.0)])])
  s = music_stats.summarize(f)
  assert s["pieces"] == 3 and s["empty"] == 1 and s["notes"] == 4
  assert s["polyphony"] == pytest.approx(2.0)  # mean of 3 and 1
  assert s["note_density"] == pytest.approx((3.0 + 0.5) / 2)
  assert music_stats.summarize(music_stats.set_features([_piece([])]))["polyphony"] is None


def test_distance_to_itself_is_zero_and_to_others_is_not():
  a = [_piece(TRIAD), _piece([(62, 0.0, 0.5), (65, 0.5, 1.0)])]
  d = music_stats.compare(a, a)["distance"]
  assert d["pitch_class_js"] == pytest.approx(0.0) and d["pitch_class_l1"] == 0.0
  assert d["note_density_abs"] == 0.0 and d["polyphony_rel"] == 0.0
  assert all(v == pytest.approx(1.0) for v in d["overlap_area"].values())

  # Disjoint pitch classes, different density and polyphony.
  b = [_piece([(61, 0.0, 4.0)]), _piece([(66, 0.0, 4.0)])]
  d = music_stats.compare(a, b)["distance"]
  assert d["pitch_class_js"] == pytest.approx(1.0) and d["pitch_class_l1"] == pytest.approx(2.0)
  assert d["polyphony_abs"] == pytest.approx(1.0)  # (3 + 1) / 2 vs 1
  assert d["note_density_rel"] == pytest.approx((2.5 - 0.25) / 0.25)
  assert d["overlap_area"]["polyphony"] == pytest.approx(0.5)  # [3, 1] vs [1, 1]
  assert d["overlap_area"]["pitch_range"] == 0.0  # [7, 3] vs [0, 0]
  assert music_stats.compare(a, b)["distance"]["pitch_class_js"] == pytest.approx(
    music_stats.compare(b, a)["distance"]["pitch_class_js"]
  )


def test_partial_overlap_and_undefined_distance():
  assert music_stats.overlap_area([0, 1, 2, 3], [2, 3, 4, 5], bins=5) == pytest.approx(0.5)
  assert 0 < music_stats.js_divergence([1, 1, 0], [0, 1, 1]) < 1
  empty = music_stats.set_features([_piece([])])
  d = music_stats.distance(empty, music_stats.set_features([_piece(TRIAD)]))
  assert d["pitch_class_js"] is None and d["overlap_area"]["polyphony"] is None


def test_note_scores_match_identical_and_shifted_pieces():
  """mir_eval's note matching on decoded token rows: a piece against itself scores 1; against
  the same notes an octave up, 0; an empty estimate, 0; an empty reference, None."""
  from jaxvae.evaluators import notes
  from jaxvae.symbolic import midi
  from jaxvae.symbolic import tokenizers

  tok = tokenizers.make({"kind": "events"})
  pm = pretty_midi.PrettyMIDI()
  inst = pretty_midi.Instrument(program=0)
  for i, pitch in enumerate((60, 64, 67, 72)):
    inst.notes.append(pretty_midi.Note(80, pitch, 0.5 * i, 0.5 * i + 0.4))
  pm.instruments.append(inst)
  row = midi.windows(midi.encode(pm), 64)[0]
  assert notes.note_scores(row, row, tok) == pytest.approx(
    {
      k: 1.0
      for k in ("precision", "recall", "f1", "precision_offset", "recall_offset", "f1_offset")
    }
  )
  up = midi.windows(midi.transpose(midi.encode(pm), 12), 64)[0]
  assert notes.note_scores(row, up, tok)["f1"] == 0.0
  empty = midi.windows(np.zeros((0,), np.int32), 64)[0]
  assert notes.note_scores(row, empty, tok)["recall"] == 0.0
  assert notes.note_scores(empty, row, tok) is None
