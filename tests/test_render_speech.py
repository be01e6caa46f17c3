"""tools/render_speech.py: a Speech Commands-style corpus spoken by espeak-ng."""

import importlib.util
import os
import shutil
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import ROOT
from conftest import load_config

_PATH = os.path.join(ROOT, "tools", "render_speech.py")
_spec = importlib.util.spec_from_file_location("render_speech", _PATH)
render_speech = importlib.util.module_from_spec(_spec)
sys.modules["render_speech"] = render_speech
_spec.loader.exec_module(render_speech)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_the_corpus_reads_as_speech_commands(tmp_path):
  from jaxvae.data import listing

  out = tmp_path / "speech"
  assert render_speech.main(["--out", str(out), "--speakers", "3"]) == 0
  y, sr = sf.read(out / "yes" / "spk000_nohash_0.wav", dtype="float32")
  assert sr == 16000 and y.shape == (16000,) and np.abs(y).max() > 0.05
  assert (out / "validation_list.txt").read_text().split() == [
    f"{w}/spk002_nohash_0.wav" for w in render_speech.WORDS
  ]
  config = load_config(
    "puzzle_vqvae.py", {"data.root": str(out), "data.cache_dir": str(tmp_path / "cache")}
  )
  items = listing.list_dataset(config)
  assert len(items) == 30 and {it.labels["word"] for it in items} == set(render_speech.WORDS)
  assert render_speech.main(["--out", str(out)]) == 1  # not empty: one error line


def test_a_missing_espeak_is_one_error_line(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("PATH", str(tmp_path))
  assert render_speech.main(["--out", str(tmp_path / "s")]) == 1
  assert capsys.readouterr().err.startswith("error: espeak-ng not found")
