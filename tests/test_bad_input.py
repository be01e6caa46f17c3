"""Every bad input named: a folder dataset holding each kind of broken audio file and each
valid oddity goes through preprocess, validate and a training run; each broken file is counted
with a one-word reason, each oddity is read; broken MIDI files are counted by the token store.
(Config values: tests/test_config.py; the workdir: tests/test_reliability.py.)"""

import json
import os

import numpy as np
import pytest
import soundfile as sf
from test_train import _cli

from jaxvae import errors

SR = 22050

# file name -> the reason it is bad, or None for a valid oddity that must be read.
AUDIO_CASES = {
  "zero_bytes.wav": "empty",
  "text.wav": "unreadable",
  "garbage_header.wav": "unreadable",
  "nan_samples.wav": "non_finite",
  "digital_silence.wav": "silent",
  "broken_link.wav": "missing",
  "truncated.wav": None,  # libsndfile reads the frames that are there
  "ten_ms.wav": None,  # padded to data.seconds (pad_crop)
  "rate_8k.wav": None,
  "three_channels.wav": None,
  "ten_minutes.wav": None,
  "clipped.wav": None,
  "ünïcødé_名前.wav": None,
  b"not_utf8_\xff.wav".decode("utf-8", "surrogateescape"): None,
}


def _tone(seconds, sr=SR, freq=440.0):
  t = np.arange(int(seconds * sr)) / sr
  return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _write_cases(folder):
  """Writes AUDIO_CASES (plus a directory named like a file) into `folder`."""
  os.makedirs(folder)
  path = lambda name: os.path.join(folder, name)
  sf.write(path("full.tmpwav"), _tone(1.0), SR, subtype="PCM_16", format="WAV")
  good = open(path("full.tmpwav"), "rb").read()
  os.remove(path("full.tmpwav"))
  open(path("zero_bytes.wav"), "wb").close()
  with open(path("text.wav"), "w") as f:
    f.write("this is not audio\n" * 50)
  with open(path("garbage_header.wav"), "wb") as f:
    f.write(np.random.default_rng(0).bytes(44) + good[44:])
  with open(path("truncated.wav"), "wb") as f:
    f.write(good[: len(good) // 3])
  nan = _tone(1.0)
  nan[100:200] = np.nan
  sf.write(path("nan_samples.wav"), nan, SR, subtype="FLOAT")
  sf.write(path("digital_silence.wav"), np.zeros(SR, np.float32), SR)
  os.symlink("/nonexistent/audio.wav", path("broken_link.wav"))
  sf.write(path("ten_ms.wav"), _tone(0.01), SR)
  sf.write(path("rate_8k.wav"), _tone(1.0, 8000), 8000)
  sf.write(path("three_channels.wav"), np.stack([_tone(1.0)] * 3, 1), SR)
  sf.write(path("ten_minutes.wav"), np.tile(_tone(1.0), 600), SR, subtype="PCM_16")
  sf.write(path("clipped.wav"), np.clip(_tone(1.0) * 10, -1, 1), SR)
  sf.write(path("ünïcødé_名前.wav"), _tone(1.0), SR)
  with open(path(b"not_utf8_\xff.wav".decode("utf-8", "surrogateescape")), "wb") as f:
    f.write(good)
  os.makedirs(path("a_directory.wav"))  # not a file: never listed as a clip


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("bad_audio")
  _write_cases(str(root / "odd"))
  os.makedirs(root / "fine")
  for i in range(8):  # a second class of plain clips, so both splits have examples
    sf.write(str(root / "fine" / f"clip{i}.wav"), _tone(1.0, freq=220.0 * (i + 1)), SR)
  return str(root)


def _overrides(tiny_overrides, root):
  # 22 files, 18 for training: 2 steps of 8 per epoch for TINY's 2 epochs, the step shapes and
  # schedules of the other tiny runs, so its steps come from the compile cache.
  return dict(
    tiny_overrides,
    **{
      "data.layout": "folder",
      "data.root": root,
      "data.val_fraction": "0.2",
      "train.image_every_epochs": "0",
    },
  )


def test_preprocess_counts_each_bad_file_with_its_reason(tmp_path, tiny_overrides, bad_folder):
  assert _cli(tmp_path, _overrides(tiny_overrides, bad_folder), mode="preprocess") == 0
  info = json.load(open(tmp_path / "preprocess.json"))
  reasons = {os.path.basename(b["path"]): b["reason"] for b in info["bad"]}
  expected = {name: reason for name, reason in AUDIO_CASES.items() if reason}
  assert {k: reasons.get(k) for k in expected} == expected
  assert all(b["action"] == "silence" for b in info["bad"])
  readable = [n for n, r in AUDIO_CASES.items() if r is None]
  assert not set(reasons) & set(readable), "a valid file was called bad"
  assert len(info["bad"]) == len(expected)
  # Every listed file gives an example (bad ones as silence): none is dropped uncounted.
  assert info["examples"] == len(AUDIO_CASES) + 8
  from jaxvae.data import store

  s = store.open_store(info["store"])
  ids = [e["clip_id"] for e in s.manifest["examples"]]
  assert "odd/not_utf8_\\xff.wav" in ids and "odd/ünïcødé_名前.wav" in ids
  assert np.isfinite(np.asarray(s.features)).all()


def test_validate_reports_the_same_reasons(tmp_path, tiny_overrides, bad_folder, capsys):
  assert _cli(tmp_path, _overrides(tiny_overrides, bad_folder), mode="validate") == 0
  report = json.load(open(tmp_path / "validate.json"))
  reasons = {os.path.basename(b["path"]): b["reason"] for b in report["bad"]}
  assert reasons == {name: reason for name, reason in AUDIO_CASES.items() if reason}
  out = capsys.readouterr().out
  assert f"files: {report['ok']} ok of {report['num_files']}" in out


def test_training_goes_on_over_bad_files(tmp_path, tiny_overrides, bad_folder):
  assert _cli(tmp_path, _overrides(tiny_overrides, bad_folder)) == 0
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in rows if r.get("kind") == "epoch"] == [2, 4]
  run = json.load(open(tmp_path / "jaxvae_run.json"))
  assert run["data"]["bad_files"] == sum(1 for r in AUDIO_CASES.values() if r)


def test_on_error_skip_drops_bad_files_but_counts_them(tmp_path, tiny_overrides, bad_folder):
  overrides = dict(_overrides(tiny_overrides, bad_folder), **{"data.on_error": "skip"})
  assert _cli(tmp_path, overrides, mode="preprocess") == 0
  info = json.load(open(tmp_path / "preprocess.json"))
  bad = sum(1 for r in AUDIO_CASES.values() if r)
  assert len(info["bad"]) == bad and all(b["action"] == "skipped" for b in info["bad"])
  assert info["examples"] == len(AUDIO_CASES) + 8 - bad


def test_a_manifest_row_naming_a_directory_is_a_bad_file(tmp_path):
  from jaxvae.audio import decode as audio

  os.makedirs(tmp_path / "x.wav")
  examples, reason = audio.load_examples(
    str(tmp_path / "x.wav"), sr=SR, mode="pad_crop", seconds=1.0
  )
  assert reason == "unreadable" and len(examples) == 1
  with pytest.raises(errors.AudioError, match="a directory, not a file"):
    audio.load_audio(str(tmp_path / "x.wav"), SR)
  os.symlink(str(tmp_path / "gone.wav"), tmp_path / "link.wav")
  with pytest.raises(errors.AudioError, match="missing .a broken symbolic link"):
    audio.load_audio(str(tmp_path / "link.wav"), SR)


def test_broken_midi_files_are_counted_by_the_token_store(tmp_path):
  pytest.importorskip("pretty_midi")
  from test_music import midi_folder_overrides

  from conftest import load_config
  from jaxvae.data import tokens

  folder, overrides = midi_folder_overrides(tmp_path)
  good = (folder / "good0.mid").read_bytes()
  (folder / "zero.mid").write_bytes(b"")
  (folder / "text.mid").write_text("not a MIDI file\n")
  (folder / "truncated.mid").write_bytes(good[: len(good) // 2])
  at = good.index(b"MTrk")
  (folder / "bad_chunk.mid").write_bytes(
    good[: at + 4] + (0x7FFFFFFF).to_bytes(4, "big") + good[at + 8 :]
  )
  config = load_config("music_transformer_vaegan.py:small", overrides)
  store = tokens.build(config, progress=False)
  reasons = {os.path.basename(b["path"]): b["reason"] for b in store.manifest["bad"]}
  assert reasons["zero.mid"] == "empty file (0 bytes)"
  assert reasons["truncated.mid"] == "truncated MIDI (the data ends inside a chunk)"
  assert reasons["text.mid"].startswith("unreadable MIDI")
  assert reasons["bad_chunk.mid"].startswith(("unreadable MIDI", "truncated MIDI"))
  assert len(reasons) == 4
  assert {e["clip_id"] for e in store.manifest["examples"]} == {f"good{i}.mid" for i in range(3)}
