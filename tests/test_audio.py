"""Audio loading: formats, resampling, downmix, bad-file reasons, examples, validation."""

import copy
import os

import numpy as np
import pytest
import soundfile as sf

from jaxvae.audio import decode as audio
from jaxvae.data.readers import Item
from jaxvae.errors import AudioError


def _sine(freq, sr, seconds, amp=0.5):
  t = np.arange(int(round(sr * seconds))) / sr
  return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _wav(path, y, sr, subtype=None):
  os.makedirs(os.path.dirname(str(path)), exist_ok=True)
  sf.write(str(path), y, sr, subtype=subtype)
  return str(path)


def _peak_hz(y, sr):
  spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
  return np.argmax(spectrum) * sr / len(y)


def _bad_files(tmp_path):
  """One file per failure reason (path -> expected reason)."""
  good = _wav(tmp_path / "good.wav", _sine(440, 8000, 0.5), 8000)
  with open(good, "rb") as f:
    header = f.read(20)
  files = {}
  path = tmp_path / "corrupt.wav"
  path.write_bytes(np.random.default_rng(0).bytes(4000))
  files[str(path)] = "unreadable"
  path = tmp_path / "truncated.wav"
  path.write_bytes(header)  # the RIFF header cut before the fmt chunk ends
  files[str(path)] = "unreadable"
  path = tmp_path / "empty.wav"
  path.write_bytes(b"")
  files[str(path)] = "empty"
  files[_wav(tmp_path / "no_frames.wav", np.zeros(0, np.float32), 8000)] = "empty"
  files[_wav(tmp_path / "silent.wav", np.zeros(8000, np.float32), 8000)] = "silent"
  nan = _sine(440, 8000, 0.5)
  nan[100] = np.nan
  files[_wav(tmp_path / "nan.wav", nan, 8000, subtype="FLOAT")] = "non_finite"
  files[str(tmp_path / "missing.wav")] = "missing"
  return files


# ----------------------------------------------------------------------------------------------
# load_audio
# ----------------------------------------------------------------------------------------------


def test_resample_keeps_frequency(tmp_path):
  path = _wav(tmp_path / "a.wav", _sine(1000, 44100, 1.0), 44100)
  y = audio.load_audio(path, 22050)
  assert y.dtype == np.float32 and y.ndim == 1
  assert abs(len(y) - 22050) <= 1
  assert abs(_peak_hz(y, 22050) - 1000) < 2.0
  # Amplitude survives resampling (a naive decimation without the right rate would not
  # keep both frequency and length).
  assert abs(np.max(np.abs(y[1000:-1000])) - 0.5) < 0.02


def test_upsample_and_native_rate(tmp_path):
  path = _wav(tmp_path / "a.wav", _sine(300, 8000, 0.5), 8000)
  up = audio.load_audio(path, 16000)
  assert abs(len(up) - 8000) <= 1 and abs(_peak_hz(up, 16000) - 300) < 3.0
  same = audio.load_audio(path, 8000)
  np.testing.assert_allclose(same, _sine(300, 8000, 0.5), atol=1e-4)  # 16-bit PCM rounding


def test_mono_downmix_and_stereo(tmp_path):
  left = _sine(440, 16000, 0.25, amp=0.8)
  right = np.zeros_like(left)
  path = _wav(tmp_path / "st.wav", np.stack([left, right], axis=1), 16000)
  mono = audio.load_audio(path, 16000)
  np.testing.assert_allclose(mono, left / 2, atol=1e-4)
  stereo = audio.load_audio(path, 16000, mono=False)
  assert stereo.shape == (2, len(left))
  np.testing.assert_allclose(stereo[1], 0.0)


def test_flac_and_int_pcm(tmp_path):
  y = _sine(440, 22050, 0.3)
  flac = _wav(tmp_path / "a.flac", y, 22050)
  pcm24 = _wav(tmp_path / "b.wav", y, 22050, subtype="PCM_24")
  for path in (flac, pcm24):
    np.testing.assert_allclose(audio.load_audio(path, 22050), y, atol=1e-4)


@pytest.mark.parametrize(
  "ext,fmt,subtype", [("ogg", "OGG", "VORBIS"), ("mp3", "MP3", "MPEG_LAYER_III")]
)
def test_compressed_formats(tmp_path, ext, fmt, subtype):
  path = str(tmp_path / f"a.{ext}")
  try:
    sf.write(path, _sine(440, 22050, 1.0), 22050, format=fmt, subtype=subtype)
  except (sf.LibsndfileError, TypeError, ValueError) as e:
    pytest.skip(f"this libsndfile cannot write {fmt}: {e}")
  y = audio.load_audio(path, 16000)
  assert abs(len(y) - 16000) < 1200  # codecs add a little padding
  assert abs(_peak_hz(y, 16000) - 440) < 3.0


def test_load_audio_reasons(tmp_path):
  for path, reason in _bad_files(tmp_path).items():
    with pytest.raises(AudioError) as e:
      audio.load_audio(path, 8000)
    assert (e.value.reason, e.value.path) == (reason, path)
    assert path in str(e.value) and reason in str(e.value)


def test_audio_error_survives_worker_processes():
  # copy goes through __reduce__, as multiprocessing does when a worker re-raises.
  e = copy.deepcopy(AudioError("silent", "/x.wav", "detail"))
  assert (e.reason, e.path, e.detail, str(e)) == (
    "silent",
    "/x.wav",
    "detail",
    "'/x.wav': silent (detail)",
  )


def test_too_short(tmp_path):
  path = _wav(tmp_path / "short.wav", _sine(440, 8000, 0.5), 8000)
  assert len(audio.load_audio(path, 8000, min_seconds=0.5)) == 4000
  with pytest.raises(AudioError) as e:
    audio.load_audio(path, 8000, min_seconds=0.6)
  assert e.value.reason == "too_short"


def test_check_audio():
  sr = 1000
  ok = _sine(50, sr, 1.0)
  assert audio.check_audio(ok, sr) is None
  assert audio.check_audio(np.zeros(0), sr) == "empty"
  assert audio.check_audio(np.where(np.arange(sr) == 7, np.inf, ok), sr) == "non_finite"
  assert audio.check_audio(ok, sr, min_seconds=1.5) == "too_short"
  assert audio.check_audio(np.full(sr, 5e-6), sr) == "silent"
  assert audio.check_audio(np.full(sr, 2e-5), sr) is None
  assert audio.check_audio(np.stack([ok, ok]), sr, min_seconds=1.0) is None  # [C, T]


# ----------------------------------------------------------------------------------------------
# fix_length / segment
# ----------------------------------------------------------------------------------------------


def test_fix_length():
  y = np.arange(1, 6, dtype=np.float32)
  np.testing.assert_array_equal(audio.fix_length(y, 3), [1, 2, 3])
  np.testing.assert_array_equal(audio.fix_length(y, 7), [1, 2, 3, 4, 5, 0, 0])
  np.testing.assert_array_equal(audio.fix_length(y, 5), y)
  assert audio.fix_length(np.ones((2, 5)), 8).shape == (2, 8)


@pytest.mark.parametrize(
  "length,n,hop,starts,last_real",
  [
    (25, 10, 10, [0, 10, 20], 5),  # 2 full + a half-full last one (kept)
    (24, 10, 10, [0, 10], 10),  # the 4-sample tail is < half: dropped
    (25, 10, 5, [0, 5, 10, 15], 10),  # overlapping; the last window ends exactly at 25
    (27, 10, 5, [0, 5, 10, 15, 20], 7),
    (6, 10, 10, [0], 6),  # shorter than one window but >= half
    (4, 10, 10, [], 0),  # too short for anything
  ],
)
def test_segment(length, n, hop, starts, last_real):
  y = np.arange(1, length + 1, dtype=np.float32)
  segs = audio.segment(y, n, hop)
  assert [s[0] - 1 for s in segs] == starts
  assert all(s.shape == (n,) for s in segs)
  if segs:
    assert np.count_nonzero(segs[-1]) == last_real  # the padding is zeros


def test_segment_min_fraction_and_bad_args():
  y = np.ones(14, np.float32)
  assert len(audio.segment(y, 10, 10, min_fraction=0.5)) == 1
  assert len(audio.segment(y, 10, 10, min_fraction=0.4)) == 2
  with pytest.raises(ValueError, match="hop_samples > 0"):
    audio.segment(y, 10, 0)


# ----------------------------------------------------------------------------------------------
# load_examples
# ----------------------------------------------------------------------------------------------


def test_load_examples_modes(tmp_path):
  path = _wav(tmp_path / "a.wav", _sine(440, 44100, 2.5), 44100)
  item = Item(clip_id="a.wav", path=path)
  (ex,), reason = audio.load_examples(item, sr=22050, mode="pad_crop", seconds=1.0)
  assert reason is None and ex.shape == (22050,) and ex.dtype == np.float32
  (ex,), _ = audio.load_examples(path, sr=22050, mode="pad_crop", seconds=3.0)
  assert ex.shape == (66150,) and np.all(ex[-11025:] == 0) and np.any(ex[:55000] != 0)
  segs, reason = audio.load_examples(item, sr=22050, mode="segment", seconds=1.0)
  assert reason is None and [s.shape for s in segs] == [(22050,)] * 3
  segs, _ = audio.load_examples(item, sr=22050, mode="segment", seconds=1.0, hop_seconds=0.5)
  # Starts 0, .5, 1, 1.5 s; a window at 2 s would only repeat the end of the 1.5 s one.
  assert len(segs) == 4
  np.testing.assert_allclose(segs[1][:11025], segs[0][11025:], atol=1e-6)


def test_load_examples_segment_too_short(tmp_path):
  path = _wav(tmp_path / "a.wav", _sine(440, 8000, 0.4), 8000)
  segs, reason = audio.load_examples(path, sr=8000, mode="segment", seconds=1.0, on_error="skip")
  assert (segs, reason) == ([], "too_short")


@pytest.mark.parametrize("mode", ["pad_crop", "segment"])
def test_load_examples_on_error(tmp_path, mode):
  for path, reason in _bad_files(tmp_path).items():
    kw = dict(sr=8000, mode=mode, seconds=0.25)
    assert audio.load_examples(path, on_error="skip", **kw) == ([], reason)
    (ex,), got = audio.load_examples(path, on_error="silence", **kw)
    assert got == reason and ex.shape == (2000,) and ex.dtype == np.float32
    assert not np.any(ex)
    with pytest.raises(AudioError) as e:
      audio.load_examples(path, on_error="raise", **kw)
    assert e.value.reason == reason


def test_load_examples_bad_arguments(tmp_path):
  path = _wav(tmp_path / "a.wav", _sine(440, 8000, 0.5), 8000)
  with pytest.raises(ValueError, match="mode is 'crop'"):
    audio.load_examples(path, sr=8000, mode="crop", seconds=1.0)
  with pytest.raises(ValueError, match="on_error is 'ignore'"):
    audio.load_examples(path, sr=8000, mode="pad_crop", seconds=1.0, on_error="ignore")


# ----------------------------------------------------------------------------------------------
# validate_items
# ----------------------------------------------------------------------------------------------


def test_validate_items(tmp_path):
  items = [
    Item(
      "a.wav", _wav(tmp_path / "a.wav", _sine(440, 22050, 1.0), 22050), {"genre": "jazz"}, "train"
    ),
    Item(
      "b.wav",
      _wav(tmp_path / "b.wav", _sine(440, 22050, 3.0), 22050),
      {"genre": "jazz", "language": "en"},
      "train",
    ),
    Item(
      "c.flac", _wav(tmp_path / "c.flac", _sine(440, 44100, 2.0), 44100), {"genre": "rock"}, "test"
    ),
  ]
  bad = _bad_files(tmp_path)
  items += [Item(os.path.basename(p), p, {"genre": "pop"}) for p in bad]
  report = audio.validate_items(items, sr=22050, progress=False)
  assert report["num_files"] == 3 + len(bad)
  assert report["ok"] == 3
  assert {b["path"]: b["reason"] for b in report["bad"]} == bad
  assert report["labels"] == {"genre": {"jazz": 2, "rock": 1}, "language": {"en": 1}}
  assert report["splits"] == {"test": 1, "train": 2}
  assert report["sample_rates"] == {"22050": 2, "44100": 1}
  assert report["resampled"] == 1
  d = report["durations"]
  assert d["min"] == pytest.approx(1.0) and d["max"] == pytest.approx(3.0)
  assert d["mean"] == pytest.approx(2.0) and d["total"] == pytest.approx(6.0)

  table = audio.format_validation_table(report)
  assert f"files: 3 ok of {3 + len(bad)} ({len(bad)} skipped)" in table
  assert "unreadable" in table and "non_finite" in table and "silent" in table
  assert "22050 Hz x 2" in table and "44100 Hz x 1" in table
  assert "genre (3 values)" not in table and "genre (2 values):" in table
  assert "total 6.0" in table


def test_validate_items_agrees_with_load_audio_on_min_seconds(tmp_path):
  path = _wav(tmp_path / "a.wav", _sine(440, 8000, 0.5), 8000)
  report = audio.validate_items([path], sr=8000, min_seconds=1.0, progress=False)
  assert report["ok"] == 0 and report["bad"] == [{"path": path, "reason": "too_short"}]
  assert "labels: none" in audio.format_validation_table(report)


def test_validate_items_progress_goes_to_stderr(tmp_path, capsys):
  path = _wav(tmp_path / "a.wav", _sine(440, 8000, 0.5), 8000)
  audio.validate_items([path], sr=8000, progress=True)
  out, err = capsys.readouterr()
  assert out == "" and "validate" in err
