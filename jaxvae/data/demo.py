"""The built-in demo corpus: music-like clips labelled by language (4) and genre (3).

The original music VAE family's song set (Arabic, English, Hindi, Spanish x hip-hop, pop, rock, with
lyrics) is not public, so the default run synthesizes a stand-in deterministically with numpy. Genre
drives tempo, drums, bass and timbre (strong in audio); language drives the sung vowels' formants
and syllable rate (weak in audio) and the lyrics' script and words (strong in text). The corpus is
written as a `manifest` dataset (WAV + lyrics .txt + CSV), so it goes through the same reader,
loader and feature path as a user's folder.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os

import numpy as np
import soundfile as sf

from jaxvae import faults
from jaxvae import workdir as workdir_lib

LANGUAGES = ("arabic", "english", "hindi", "spanish")
GENRES = ("hiphop", "pop", "rock")

# Genre: (tempo BPM, number of harmonics of the chord voice, distortion drive, hat density).
_GENRE_STYLE = {"hiphop": (88.0, 3, 0.0, 2), "pop": (118.0, 8, 0.0, 4), "rock": (142.0, 12, 4.0, 8)}
# Language: vowel formants (F1, F2) in Hz and syllables per beat of the sung line.
_LANGUAGE_VOICE = {
  "arabic": ([(700, 1200), (350, 2200), (400, 800)], 1.0),
  "english": ([(600, 1700), (450, 1900), (300, 900)], 2.0),
  "hindi": ([(750, 1300), (300, 2400), (500, 1000)], 1.5),
  "spanish": ([(650, 1500), (400, 2000), (350, 750)], 3.0),
}
_SYLLABLES = {
  "arabic": "حَب قَل نور لَي لا سَما قَمَر روح يا عين دَرب شَمس".split(),
  "english": "love night heart fire dream road baby light wild free home rain".split(),
  "hindi": "प्यार दिल रात सपना चाँद तेरा मेरा जान गीत दुनिया साथ रंग".split(),
  "spanish": "amor noche corazón fuego sueño camino cielo vida luna baila mar sol".split(),
}
_GENRE_WORDS = {
  "hiphop": "flow street beat",
  "pop": "dance shine forever",
  "rock": "thunder scream loud",
}


def _envelope(n: int, sr: int, attack: float, decay: float) -> np.ndarray:
  t = np.arange(n) / sr
  return np.minimum(t / attack, 1.0) * np.exp(-t / decay)


def _add_events(track, starts, sound):
  for s in starts:
    end = min(len(track), s + len(sound))
    if end > s:
      track[s:end] += sound[: end - s]


def _drums(n, sr, tempo, hats, rng):
  beat = int(sr * 60.0 / tempo)
  track = np.zeros(n, np.float32)
  kl = int(0.25 * sr)
  t = np.arange(kl) / sr
  kick = np.sin(2 * np.pi * (50 + 80 * np.exp(-t * 30)) * t) * np.exp(-t * 12)
  snare = rng.standard_normal(kl) * np.exp(-t * 25) * 0.5
  hat = rng.standard_normal(int(0.05 * sr)) * _envelope(int(0.05 * sr), sr, 0.001, 0.01) * 0.3
  _add_events(track, range(0, n, 2 * beat), kick)
  _add_events(track, range(beat, n, 2 * beat), snare)
  _add_events(track, range(0, n, max(1, beat * 4 // (hats * 2))), hat)
  return track


def _chords(n, sr, tempo, harmonics, drive, root_hz, rng):
  t = np.arange(n) / sr
  bar = 4 * 60.0 / tempo
  progression = np.array([0, 5, 7, 3])[rng.permutation(4)]
  semis = progression[(t // bar).astype(int) % 4]
  out = np.zeros(n)
  for interval in (0, 4, 7):
    f = root_hz * 2 ** ((semis + interval) / 12)
    phase = 2 * np.pi * np.cumsum(f) / sr
    for h in range(1, harmonics + 1):
      out += np.sin(h * phase) / h
  if drive:
    out = np.tanh(drive * out / harmonics) * harmonics / drive
  bass_f = root_hz / 2 * 2 ** (semis / 12)
  out += 1.5 * np.sin(2 * np.pi * np.cumsum(bass_f) / sr)
  return (out / (harmonics + 3)).astype(np.float32)


def _voice(n, sr, tempo, formants, syll_per_beat, rng):
  """A sung line: a glottal pulse train through two formant resonances per vowel."""
  t = np.arange(n) / sr
  syll = max(1, int(sr * 60.0 / tempo / syll_per_beat))
  index = np.arange(n) // syll
  pitch = 220 * 2 ** (rng.integers(0, 8, size=index.max() + 1)[index] / 12)
  vibrato = 1 + 0.01 * np.sin(2 * np.pi * 5.5 * t)
  phase = np.cumsum(pitch * vibrato) / sr
  vowel = rng.integers(0, len(formants), size=index.max() + 1)[index]
  out = np.zeros(n)
  for h in range(1, 30):
    fh = h * pitch
    gain = np.zeros(n)
    for k, (f1, f2) in enumerate(formants):
      sel = vowel == k
      gain[sel] = np.exp(-(((fh[sel] - f1) / 150.0) ** 2)) + 0.7 * np.exp(
        -(((fh[sel] - f2) / 200.0) ** 2)
      )
    out += gain * np.sin(2 * np.pi * h * phase) / np.sqrt(h)
  gate = (np.arange(n) % syll) < 0.85 * syll
  return (out * gate * 0.4).astype(np.float32)


def synthesize(
  language: str, genre: str, seconds: float, sr: int, rng: np.random.Generator
) -> np.ndarray:
  """One clip, peak-normalized to 0.9."""
  n = int(round(seconds * sr))
  tempo0, harmonics, drive, hats = _GENRE_STYLE[genre]
  tempo = tempo0 * rng.uniform(0.95, 1.05)
  formants, rate = _LANGUAGE_VOICE[language]
  root = 110 * 2 ** (rng.integers(0, 12) / 12)
  y = (
    _drums(n, sr, tempo, hats, rng) * rng.uniform(0.8, 1.2)
    + _chords(n, sr, tempo, harmonics, drive, root, rng) * rng.uniform(0.6, 1.0)
    + _voice(n, sr, tempo, formants, rate, rng) * rng.uniform(0.5, 0.8)
    + 0.01 * rng.standard_normal(n)
  )
  return (0.9 * y / (np.max(np.abs(y)) + 1e-9)).astype(np.float32)


def lyrics(language: str, genre: str, rng: np.random.Generator, lines: int = 4) -> str:
  words = _SYLLABLES[language]
  out = []
  for _ in range(lines):
    line = [words[i] for i in rng.integers(0, len(words), size=rng.integers(4, 8))]
    if rng.random() < 0.3:  # genre leaks into the text a little, as in real songs.
      line.append(rng.choice(_GENRE_WORDS[genre].split()))
    out.append(" ".join(line))
  return "\n".join(out) + "\n"


def ensure_corpus(
  cache_dir: str, *, seconds: float, sr: int, clips_per_class: int, seed: int = 0
) -> str:
  """Writes the corpus once per parameter set; returns the manifest CSV path."""
  params = {
    "seconds": seconds,
    "sr": sr,
    "clips_per_class": clips_per_class,
    "seed": seed,
    "version": 1,
  }
  key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
  root = os.path.join(cache_dir, "demo", key)
  manifest = os.path.join(root, "manifest.csv")
  if os.path.exists(manifest):
    return manifest
  # Per-process temporary folder: several processes (hosts of one run, parallel tests) may
  # write the same corpus at once; the first to finish publishes it.
  workdir_lib.remove_stale_tmp(root)
  tmp = workdir_lib.tmp_name(root)
  os.makedirs(os.path.join(tmp, "audio"), exist_ok=True)
  os.makedirs(os.path.join(tmp, "lyrics"), exist_ok=True)
  rows = []
  for li, language in enumerate(LANGUAGES):
    for gi, genre in enumerate(GENRES):
      for k in range(clips_per_class):
        rng = np.random.default_rng([seed, li, gi, k])
        name = f"{language}_{genre}_{k:03d}"
        sf.write(
          os.path.join(tmp, "audio", name + ".wav"),
          synthesize(language, genre, seconds, sr, rng),
          sr,
          subtype="PCM_16",
        )
        with open(os.path.join(tmp, "lyrics", name + ".txt"), "w", encoding="utf-8") as f:
          f.write(lyrics(language, genre, rng))
        faults.point("demo.clip", tmp)
        rows.append(
          {
            "audio": f"audio/{name}.wav",
            "lyrics": f"lyrics/{name}.txt",
            "language": language,
            "genre": genre,
          }
        )
  with open(os.path.join(tmp, "manifest.csv"), "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=["audio", "lyrics", "language", "genre"])
    writer.writeheader()
    writer.writerows(rows)
  with open(os.path.join(tmp, "params.json"), "w") as f:
    json.dump(params, f)
  # Atomic: a half-written corpus is never mistaken for a whole one.
  workdir_lib.rename_into_place(tmp, root, "manifest.csv")
  return manifest
