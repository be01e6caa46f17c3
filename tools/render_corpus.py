"""A realistic development corpus: songs rendered from generated MIDI, with spoken lyrics.

    python tools/render_corpus.py --out /data/devsongs                  # 120 clips of 12 s
    python tools/render_corpus.py --out /data/devsongs --clips-per-class 20 --seconds 30 --seed 1
    python -m jaxvae.main --config=configs/conv_vae.py:small --workdir=runs/dev_conv \\
        --config.data.layout=manifest --config.data.root=/data/devsongs/manifest.csv

The built-in demo corpus gives genre away by construction (tempo, drums and timbre are fixed
per genre, so PCA + k-means separates it perfectly). This one is built to be hard in the way
real songs are. Per clip (seeded by `--seed`, language, genre and index):

- **Shared instrument pools.** The chord, bass and lead instruments and the drum kit are drawn
  from General MIDI pools shared by all genres. Each genre draws its typical instruments
  (distorted guitars in rock, synth bass and the TR-808 kit in hip-hop, ...) three times as
  often as the others. Timbre hints at genre, as in real music, but does not tell it: the
  best guess of the genre from any one instrument choice is right about half the time, and
  from all four together 70 % of the time (chance: 33 %).
- **Overlapping tempos.** hiphop 80-115, pop 90-130, rock 100-145 BPM.
- **Random loudness.** Velocities and the final level (-14 to -1 dBFS peak) are drawn
  independently of genre.
- **What genre does decide** is musical, as in real songs:
  - the groove: hip-hop's syncopated kick under swung hats, pop's four-on-the-floor or
    kick-snare beat with off-beat hats, rock's straight eighths with crashes and fills;
  - the harmony: looped minor seventh chords, diatonic major progressions, power chords;
  - the accompaniment: off-beat stabs and sustained pads, arpeggios or whole-bar chords,
    eighth-note power chords;
  - the bass line.
- **Lyrics.** Each clip gets its own lyrics in its language: lines of words drawn from a
  per-language list, with no genre words, so the text tells language only. espeak-ng speaks
  them (rap / spoken word, random voice pitch and speed) over the music at -8 to 0 dB
  relative to it.

**Renderings.** These defaults make a corpus on which PCA + k-means finds little genre. Other
settings render the same songs in ways that let a simple baseline see more, so a quality
result can be checked on more than one corpus: `--levels fixed` (velocity 100, a -3 dBFS
peak), `--instruments genre` (only each genre's typical instruments), `--tempos separate`
(non-overlapping ranges), `--vocals off`, and several comma-separated `--soundfont`s (one
drawn per clip). corpus.json records them (`params.rendering`).

    python tools/render_corpus.py --out /data/easy --levels fixed --instruments genre \
        --soundfont /usr/share/sounds/sf2/FluidR3_GM.sf2,/usr/share/sounds/sf2/TimGM6mb.sf2

Output, in jaxvae's `manifest` layout (`--config.data.layout=manifest`):
- `OUT/manifest.csv` with columns `audio`, `lyrics`, `language`, `genre`, `title`. The
  title is an identifier, unique per clip, which eval reports as skipped rather than
  clustering it.
- `OUT/audio/*.wav` (mono, 16-bit), `OUT/lyrics/*.txt`, `OUT/midi/*.mid` (the rendered
  MIDI, usable by the MIDI family's `folder` layout).
- `OUT/corpus.json`: the parameters and, per clip, every random choice (tempo, key,
  programs, kit, levels, voice).

The folder is written under a temporary name and renamed when complete: an interrupted
render never leaves a half corpus that looks whole.

Needs the `fluidsynth` and `espeak-ng` programs and a General MIDI SoundFont. On Debian or
Ubuntu: `apt-get install fluidsynth fluid-soundfont-gm espeak-ng`. `--soundfont` defaults
to `/usr/share/sounds/sf2/FluidR3_GM.sf2`. A missing program or SoundFont is one `error:`
line and exit status 1. Neither the quickstart nor the tests need this tool; the tests that
cover it skip when FluidSynth is absent.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from jaxvae import workdir as workdir_lib
from jaxvae.audio import decode as audio_decode

LANGUAGES = ("arabic", "english", "hindi", "spanish")
GENRES = ("hiphop", "pop", "rock")
DEFAULT_SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
FORMAT_VERSION = 2  # 2: chords from the relative key in the other mode

# espeak-ng voice, base words per minute.
VOICES = {
  "arabic": ("ar", 130),
  "english": ("en-us", 160),
  "hindi": ("hi", 140),
  "spanish": ("es", 165),
}

WORDS = {
  "arabic": (
    "حب قلب ليل نور قمر شمس روح عين درب سماء بحر نار حلم طريق وطن صوت يد زمن وجه باب "
    "غيم مطر ورد نجم صبر شوق دمع ضحك سفر بيت"
  ).split(),
  "english": (
    "love heart night light moon sun soul eyes road sky sea fire dream way home voice hand "
    "time face door cloud rain rose star wait miss tears laugh travel house"
  ).split(),
  "hindi": (
    "प्यार दिल रात रोशनी चाँद सूरज रूह आँखें राह आसमान समंदर आग सपना रास्ता घर आवाज़ हाथ "
    "वक़्त चेहरा दरवाज़ा बादल बारिश गुलाब तारा इंतज़ार याद आँसू हँसी सफ़र मकान"
  ).split(),
  "spanish": (
    "amor corazón noche luz luna sol alma ojos camino cielo mar fuego sueño vía casa voz mano "
    "tiempo cara puerta nube lluvia rosa estrella espera extraño lágrimas risa viaje hogar"
  ).split(),
}

# Instrument pools shared by every genre (General MIDI programs; drum kits are bank-128
# presets). Each genre draws its typical ones `TYPICAL_WEIGHT` times as often as the rest, as
# real genres lean on some instruments without owning them: one of these choices guesses the
# genre right about half the time, all four 70 % of the time (the tests bound both).
CHORD_PROGRAMS = (0, 4, 5, 16, 19, 24, 25, 27, 29, 30, 48, 50, 88, 89)
BASS_PROGRAMS = (32, 33, 34, 35, 38, 39)
LEAD_PROGRAMS = (11, 56, 65, 66, 71, 73, 80, 81)
DRUM_KITS = (0, 8, 16, 24, 25)
TYPICAL_WEIGHT = 3.0
TYPICAL = {
  "hiphop": {"chord": (4, 5, 50, 89), "bass": (38, 39), "lead": (11, 80), "kit": (24, 25)},
  "pop": {"chord": (0, 24, 48, 88), "bass": (33, 35), "lead": (65, 73), "kit": (0, 8)},
  "rock": {"chord": (16, 29, 30), "bass": (34, 32), "lead": (56, 81), "kit": (16, 8)},
}


def _draw(rng: np.random.Generator, pool: tuple[int, ...], typical: tuple[int, ...]) -> int:
  weights = np.asarray([TYPICAL_WEIGHT if p in typical else 1.0 for p in pool])
  return int(rng.choice(pool, p=weights / weights.sum()))


# Genre: tempo range (BPM), probability of a minor key, progressions (scale-degree roots in
# semitones, chord quality), bars per chord.
TEMPO = {"hiphop": (80.0, 115.0), "pop": (90.0, 130.0), "rock": (100.0, 145.0)}
MINOR = {"hiphop": 0.85, "pop": 0.2, "rock": 0.5}
PROGRESSIONS = {
  "hiphop": (((0, "m7"), (5, "m7")), ((0, "m7"), (8, "maj7")), ((0, "m7"), (10, "7"), (8, "maj7"))),
  "pop": (
    ((0, "maj"), (7, "maj"), (9, "min"), (5, "maj")),
    ((9, "min"), (5, "maj"), (0, "maj"), (7, "maj")),
    ((0, "maj"), (5, "maj"), (9, "min"), (7, "maj")),
  ),
  "rock": (
    ((0, "5"), (10, "5"), (5, "5"), (0, "5")),
    ((0, "5"), (5, "5"), (7, "5"), (5, "5")),
    ((0, "5"), (8, "5"), (10, "5"), (0, "5")),
  ),
}
BARS_PER_CHORD = {"hiphop": 2, "pop": 1, "rock": 1}
# The mode the progressions above are written in. A clip in the other mode plays them from
# the relative key (a major progression 3 semitones above a minor tonic, a minor one 3
# below a major tonic), so chords and lead share one scale. Rock's power chords have no third.
HOME_MODE = {"hiphop": "minor", "pop": "major", "rock": None}
QUALITY = {
  "maj": (0, 4, 7),
  "min": (0, 3, 7),
  "m7": (0, 3, 7, 10),
  "maj7": (0, 4, 7, 11),
  "7": (0, 4, 7, 10),
  "5": (0, 7, 12),
}
# Drum patterns on a 16-step bar: {GM drum note: steps}.
KICK, SNARE, CLAP, HAT, OPEN_HAT, CRASH, RIDE, TOM_HI, TOM_MID, TOM_LO = (
  36,
  38,
  39,
  42,
  46,
  49,
  51,
  50,
  47,
  45,
)
GROOVES = {
  "hiphop": (
    {KICK: (0, 7, 10), SNARE: (4, 12), HAT: tuple(range(0, 16, 2))},
    {KICK: (0, 3, 10), SNARE: (4, 12), HAT: tuple(range(16))},
    {KICK: (0, 10, 11), CLAP: (4, 12), HAT: tuple(range(0, 16, 2)), OPEN_HAT: (14,)},
  ),
  "pop": (
    {KICK: (0, 4, 8, 12), CLAP: (4, 12), OPEN_HAT: (2, 6, 10, 14)},
    {KICK: (0, 8, 10), SNARE: (4, 12), HAT: tuple(range(0, 16, 2))},
    {KICK: (0, 4, 8, 12), SNARE: (4, 12), HAT: tuple(range(16))},
  ),
  "rock": (
    {KICK: (0, 8), SNARE: (4, 12), HAT: tuple(range(0, 16, 2))},
    {KICK: (0, 6, 8), SNARE: (4, 12), RIDE: tuple(range(0, 16, 2))},
    {KICK: (0, 2, 8, 10), SNARE: (4, 12), HAT: tuple(range(0, 16, 2))},
  ),
}
SWING = {"hiphop": (0.1, 0.25), "pop": (0.0, 0.05), "rock": (0.0, 0.03)}


# `--tempos separate`: ranges that do not overlap, so tempo alone tells genre.
TEMPO_SEPARATE = {"hiphop": (78.0, 92.0), "pop": (108.0, 122.0), "rock": (138.0, 155.0)}
FIXED_VELOCITY, FIXED_PEAK_DB = 100, -3.0  # `--levels fixed`


@dataclasses.dataclass(frozen=True)
class Rendering:
  """What a rendering lets a simple baseline see (the defaults are the hard corpus above):

  - levels: 'random' (velocities and final level drawn per clip, independent of genre) or
    'fixed' (velocity 100 and a -3 dBFS peak for every clip);
  - instruments: 'shared' (the shared pools, genre-typical ones 3x as likely) or 'genre'
    (only the genre's typical instruments: timbre tells genre);
  - tempos: 'overlapping' (TEMPO) or 'separate' (TEMPO_SEPARATE);
  - vocals: spoken lyrics mixed in, or none (the lyrics files are still written);
  - soundfonts: one SoundFont, or several with one drawn per clip.
  """

  levels: str = "random"
  instruments: str = "shared"
  tempos: str = "overlapping"
  vocals: bool = True
  soundfonts: tuple[str, ...] = (DEFAULT_SOUNDFONT,)

  def params(self) -> dict:
    return dataclasses.asdict(self) | {"soundfonts": [os.path.basename(s) for s in self.soundfonts]}


CHOICES = {
  "levels": ("random", "fixed"),
  "instruments": ("shared", "genre"),
  "tempos": ("overlapping", "separate"),
}


def plan_clip(
  language: str,
  genre: str,
  seconds: float,
  rng: np.random.Generator,
  rendering: Rendering = Rendering(),
) -> dict:
  """Every random choice of one clip (what corpus.json records), drawn from `rng`. The
  default rendering draws exactly what the tool's earlier versions drew for the same seed."""
  lo, hi = (TEMPO_SEPARATE if rendering.tempos == "separate" else TEMPO)[genre]
  typical = TYPICAL[genre]
  if rendering.instruments == "genre":
    pools = {k: tuple(v) for k, v in typical.items()}
  else:
    pools = {
      "chord": CHORD_PROGRAMS,
      "bass": BASS_PROGRAMS,
      "lead": LEAD_PROGRAMS,
      "kit": DRUM_KITS,
    }
  words = WORDS[language]
  lines = [
    " ".join(words[i] for i in rng.integers(0, len(words), size=rng.integers(4, 8)))
    for _ in range(int(rng.integers(6, 10)))
  ]
  voice, wpm = VOICES[language]
  plan = {
    "language": language,
    "genre": genre,
    "seconds": seconds,
    "tempo": float(rng.uniform(lo, hi)),
    "key": int(rng.integers(0, 12)),
    "minor": bool(rng.random() < MINOR[genre]),
    "progression": int(rng.integers(len(PROGRESSIONS[genre]))),
    "groove": int(rng.integers(len(GROOVES[genre]))),
    "swing": float(rng.uniform(*SWING[genre])),
    "chord_program": _draw(rng, pools["chord"], typical["chord"]),
    "bass_program": _draw(rng, pools["bass"], typical["bass"]),
    "lead_program": _draw(rng, pools["lead"], typical["lead"]) if rng.random() < 0.5 else None,
    "drum_kit": _draw(rng, pools["kit"], typical["kit"]),
    "velocity": int(rng.integers(70, 116)),
    "peak_db": float(rng.uniform(-14.0, -1.0)),
    "voice": voice,
    "voice_wpm": int(wpm * rng.uniform(0.85, 1.15)),
    "voice_pitch": int(rng.integers(25, 75)),
    "voice_db": float(rng.uniform(-8.0, 0.0)),
    "lyrics": lines,
    "melody_seed": int(rng.integers(2**31)),
  }
  if rendering.levels == "fixed":  # drawn above all the same, so the other choices stay
    plan["velocity"], plan["peak_db"] = FIXED_VELOCITY, FIXED_PEAK_DB
  if not rendering.vocals:
    plan["voice_db"] = None
  plan["soundfont"] = 0
  if len(rendering.soundfonts) > 1:  # drawn last: the other choices stay those of one
    plan["soundfont"] = int(rng.integers(len(rendering.soundfonts)))
  return plan


def _note(inst, pitch, start, end, velocity):
  import pretty_midi  # pylint: disable=g-import-not-at-top

  inst.notes.append(
    pretty_midi.Note(
      velocity=int(np.clip(velocity, 1, 127)),
      pitch=int(pitch),
      start=start,
      end=max(end, start + 0.02),
    )
  )


def compose(plan: dict):
  """The clip's `pretty_midi.PrettyMIDI`: drums, chords, bass and (sometimes) a lead line."""
  import pretty_midi  # pylint: disable=g-import-not-at-top

  genre, tempo, v = plan["genre"], plan["tempo"], plan["velocity"]
  rng = np.random.default_rng(plan["melody_seed"])
  step = 60.0 / tempo / 4  # one sixteenth
  bar = 16 * step
  n_bars = int(np.ceil(plan["seconds"] / bar)) + 1
  pm = pretty_midi.PrettyMIDI(initial_tempo=tempo)
  drums = pretty_midi.Instrument(program=plan["drum_kit"], is_drum=True, name="drums")
  chords = pretty_midi.Instrument(program=plan["chord_program"], name="chords")
  bass = pretty_midi.Instrument(program=plan["bass_program"], name="bass")
  lead = pretty_midi.Instrument(program=plan["lead_program"] or 0, name="lead")

  def at(b, s):  # onset of step s of bar b, with swing on the off sixteenths
    return b * bar + (s + (plan["swing"] if s % 2 else 0.0)) * step

  groove = GROOVES[genre][plan["groove"]]
  progression = PROGRESSIONS[genre][plan["progression"]]
  tonic = 48 + plan["key"]
  scale = (0, 2, 3, 5, 7, 8, 10) if plan["minor"] else (0, 2, 4, 5, 7, 9, 11)
  mode = "minor" if plan["minor"] else "major"
  home = HOME_MODE[genre]
  relative = 0 if home in (None, mode) else (3 if mode == "minor" else -3)
  for b in range(n_bars):
    for drum, steps in groove.items():
      for s in steps:
        accent = 1.0 if s % 4 == 0 else 0.8
        _note(drums, drum, at(b, s), at(b, s) + step, v * accent * rng.uniform(0.85, 1.0))
    if genre == "rock" and b % 4 == 0:
      _note(drums, CRASH, at(b, 0), at(b, 0) + 4 * step, v)
    if genre == "rock" and b % 4 == 3:  # a tom fill on the last beat
      for s, tom in zip((12, 13, 14, 15), (TOM_HI, TOM_HI, TOM_MID, TOM_LO)):
        _note(drums, tom, at(b, s), at(b, s) + step, v)

    degree, quality = progression[(b // BARS_PER_CHORD[genre]) % len(progression)]
    root = tonic + degree + relative
    voicing = [root + i for i in QUALITY[quality]]
    if genre == "hiphop":  # a sustained chord with an off-beat stab an octave above it
      for p in voicing:
        _note(chords, p + 12, at(b, 0), at(b, 0) + bar * 0.95, v * 0.6)
        _note(chords, p + 24, at(b, 11), at(b, 12), v * 0.7)
      for s in groove.get(KICK, (0,)):
        _note(bass, root - 12, at(b, s), at(b, s) + 3 * step, v)
    elif genre == "pop":
      if plan["groove"] % 2:  # arpeggiated eighths
        for i, s in enumerate(range(0, 16, 2)):
          p = voicing[i % len(voicing)] + 12
          _note(chords, p, at(b, s), at(b, s) + 2 * step, v * 0.7)
      else:  # the whole bar
        for p in voicing:
          _note(chords, p + 12, at(b, 0), at(b, 16) - 0.01, v * 0.7)
      for s in (0, 4, 8, 12):
        _note(bass, root - 12 + (12 if s == 8 else 0), at(b, s), at(b, s) + 3 * step, v)
    else:  # rock: eighth-note power chords and bass
      for s in range(0, 16, 2):
        for p in voicing:
          _note(chords, p, at(b, s), at(b, s) + 1.6 * step, v * 0.85)
        _note(bass, root - 12, at(b, s), at(b, s) + 1.8 * step, v)

    if plan["lead_program"] is not None:
      density = {"hiphop": 0.25, "pop": 0.4, "rock": 0.35}[genre]
      for s in range(0, 16, 2):
        if rng.random() < density:
          p = tonic + 12 + scale[int(rng.integers(len(scale)))]
          _note(lead, p, at(b, s), at(b, s) + 2 * step * rng.integers(1, 3), v * 0.75)
  pm.instruments.extend([drums, chords, bass] + ([lead] if lead.notes else []))
  return pm


def _run(cmd: list[str], what: str) -> bytes:
  done = subprocess.run(cmd, capture_output=True, check=False)
  if done.returncode != 0:
    raise RuntimeError(f"{what} failed ({' '.join(cmd[:2])} ...): {done.stderr.decode()[-300:]}")
  return done.stdout


def speak(plan: dict, sr: int) -> np.ndarray:
  """The lyrics spoken by espeak-ng, one line after another with a short pause, at `sr`."""
  import soundfile as sf  # pylint: disable=g-import-not-at-top

  parts = []
  for line in plan["lyrics"]:
    cmd = ["espeak-ng", "-v", plan["voice"], "-s", str(plan["voice_wpm"]), "-p"]
    wav = _run(cmd + [str(plan["voice_pitch"]), "--stdout", line], "espeak-ng")
    y, sr_in = sf.read(io.BytesIO(wav), dtype="float32")
    parts += [audio_decode.resample(y, sr_in, sr), np.zeros(int(0.25 * sr), np.float32)]
  return np.concatenate(parts).astype(np.float32)


def _rms(y: np.ndarray) -> float:
  return float(np.sqrt(np.mean(np.square(y)) + 1e-12))


def render_clip(plan: dict, midi_path: str, wav_path: str, soundfont: str, sr: int) -> None:
  """Writes the clip's MIDI and its mix (synthesized music + spoken lyrics, unless the plan's
  voice_db is None) as 16-bit WAV."""
  import soundfile as sf  # pylint: disable=g-import-not-at-top

  compose(plan).write(midi_path)
  with tempfile.TemporaryDirectory() as tmp:
    music_path = os.path.join(tmp, "music.wav")
    _run(
      [
        "fluidsynth",
        "-ni",
        "-q",
        "-g",
        "0.5",
        "-r",
        str(sr),
        "-T",
        "wav",
        "-F",
        music_path,
        soundfont,
        midi_path,
      ],
      "fluidsynth",
    )
    music, _ = sf.read(music_path, dtype="float32", always_2d=True)
  n = int(round(plan["seconds"] * sr))
  music = music.mean(axis=1)[:n]
  music = np.pad(music, (0, n - len(music)))
  mix = music
  if plan["voice_db"] is not None:
    voice = speak(plan, sr)
    start = int(sr * 60.0 / plan["tempo"] * 4 * 0.5)  # the voice enters after half a bar
    voice = np.pad(voice, (start, 0))[:n]
    voice = np.pad(voice, (0, n - len(voice)))
    gain = _rms(music) / _rms(voice[voice != 0] if np.any(voice) else voice)
    mix = music + voice * gain * 10 ** (plan["voice_db"] / 20)
  mix *= 10 ** (plan["peak_db"] / 20) / (np.max(np.abs(mix)) + 1e-9)
  sf.write(wav_path, mix.astype(np.float32), sr, subtype="PCM_16")


def check_tools(soundfont: str) -> str:
  """'' when fluidsynth, espeak-ng and the SoundFont are there, else what is missing and how
  to install it."""
  missing = [p for p in ("fluidsynth", "espeak-ng") if shutil.which(p) is None]
  if missing:
    return (
      f"{' and '.join(missing)} not found on PATH; install with "
      "'apt-get install fluidsynth fluid-soundfont-gm espeak-ng' (Debian/Ubuntu)"
    )
  if not os.path.isfile(soundfont):
    return (
      f"SoundFont {soundfont!r} not found; pass --soundfont or install a General MIDI one "
      "('apt-get install fluid-soundfont-gm')"
    )
  return ""


def _one(job):
  plan, tmp, name, soundfonts, sr = job
  soundfont = soundfonts[plan.get("soundfont", 0)]
  render_clip(
    plan,
    os.path.join(tmp, "midi", name + ".mid"),
    os.path.join(tmp, "audio", name + ".wav"),
    soundfont,
    sr,
  )
  return name


def _render_all(work: list, jobs: int):
  """Renders every job, in `jobs` processes (in this one when 1); yields the clip names."""
  if jobs == 1:
    yield from map(_one, work)
    return
  with concurrent.futures.ProcessPoolExecutor(jobs) as pool:
    yield from pool.map(_one, work)


def render(
  out: str,
  *,
  clips_per_class: int,
  seconds: float,
  seed: int,
  sr: int = 22050,
  rendering: Rendering = Rendering(),
  languages=LANGUAGES,
  jobs: int = 0,
) -> str:
  """Renders the corpus into `out` (which must not exist yet, or be empty); returns the
  manifest path."""
  out = os.path.normpath(os.path.abspath(out))
  if os.path.isdir(out) and os.listdir(out) or os.path.exists(out) and not os.path.isdir(out):
    raise FileExistsError(
      f"{out!r} already exists and is not an empty folder; choose another --out"
    )
  if os.path.isdir(out):
    os.rmdir(out)  # empty: the finished corpus is renamed into its place
  workdir_lib.remove_stale_tmp(out)
  tmp = workdir_lib.tmp_name(out)
  for sub in ("audio", "lyrics", "midi"):
    os.makedirs(os.path.join(tmp, sub), exist_ok=True)
  rows, plans, work = [], {}, []
  title_order = np.random.default_rng([seed, 99]).permutation(
    len(languages) * len(GENRES) * clips_per_class
  )
  for language in languages:
    li = LANGUAGES.index(language)  # a clip's seed does not depend on which languages are asked
    for gi, genre in enumerate(GENRES):
      for k in range(clips_per_class):
        rng = np.random.default_rng([seed, li, gi, k])
        plan = plan_clip(language, genre, seconds, rng, rendering)
        name = f"{language}_{genre}_{k:03d}"
        with open(os.path.join(tmp, "lyrics", name + ".txt"), "w", encoding="utf-8") as f:
          f.write("\n".join(plan["lyrics"]) + "\n")
        rows.append(
          {
            "audio": f"audio/{name}.wav",
            "lyrics": f"lyrics/{name}.txt",
            "language": language,
            "genre": genre,
            "title": f"track {int(title_order[len(rows)]) + 1:04d}",
          }
        )
        plans[name] = plan
        work.append((plan, tmp, name, rendering.soundfonts, sr))
  for name in _render_all(work, jobs or os.cpu_count() or 1):
    print(f"rendered {name}", flush=True)
  with open(os.path.join(tmp, "corpus.json"), "w", encoding="utf-8") as f:
    params = {
      "version": FORMAT_VERSION,
      "seed": seed,
      "clips_per_class": clips_per_class,
      "seconds": seconds,
      "sr": sr,
      "languages": list(languages),
      "genres": list(GENRES),
      "soundfont": os.path.basename(rendering.soundfonts[0]),
      "rendering": rendering.params(),
    }
    json.dump({"params": params, "clips": plans}, f, ensure_ascii=False, indent=1)
  with open(os.path.join(tmp, "manifest.csv"), "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  workdir_lib.rename_into_place(tmp, out, "manifest.csv")
  return os.path.join(out, "manifest.csv")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(
    prog="python tools/render_corpus.py",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("--out", required=True, help="the corpus folder to create")
  p.add_argument("--clips-per-class", type=int, default=10, help="clips per language x genre")
  p.add_argument("--seconds", type=float, default=12.0, help="clip length")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--sr", type=int, default=22050)
  p.add_argument(
    "--soundfont",
    default=DEFAULT_SOUNDFONT,
    help="a General MIDI SoundFont, or several separated by commas (one drawn per clip)",
  )
  p.add_argument("--levels", default="random", help="random (per clip) or fixed")
  p.add_argument("--instruments", default="shared", help="shared pools, or genre (typical only)")
  p.add_argument("--tempos", default="overlapping", help="overlapping or separate per genre")
  p.add_argument("--vocals", default="on", help="on (spoken lyrics mixed in) or off")
  p.add_argument(
    "--languages", default=",".join(LANGUAGES), help="a subset of " + ",".join(LANGUAGES)
  )
  p.add_argument("--jobs", type=int, default=0, help="render processes (default: one per core)")
  args = p.parse_args(argv)
  languages = tuple(x for x in args.languages.split(",") if x)
  soundfonts = tuple(s for s in args.soundfont.split(",") if s)
  problem = next(filter(None, (check_tools(s) for s in soundfonts)), "")
  for name, allowed in {**CHOICES, "vocals": ("on", "off")}.items():
    if not problem and getattr(args, name) not in allowed:
      problem = f"--{name} is {getattr(args, name)!r}; expected one of {', '.join(allowed)}"
  if not problem and (not languages or set(languages) - set(LANGUAGES)):
    problem = f"--languages {args.languages!r}: expected a subset of {','.join(LANGUAGES)}"
  if not problem and (args.clips_per_class < 1 or args.seconds <= 0 or args.sr < 8000):
    problem = "--clips-per-class and --seconds must be positive, --sr at least 8000"
  if not problem and args.jobs < 0:
    problem = f"--jobs is {args.jobs}; expected 0 (one per core) or more"
  if problem:
    print(f"error: {problem}", file=sys.stderr)
    return 1
  try:
    manifest = render(
      args.out,
      clips_per_class=args.clips_per_class,
      seconds=args.seconds,
      seed=args.seed,
      sr=args.sr,
      rendering=Rendering(
        levels=args.levels,
        instruments=args.instruments,
        tempos=args.tempos,
        vocals=args.vocals == "on",
        soundfonts=soundfonts,
      ),
      languages=languages,
      jobs=args.jobs,
    )
  except (OSError, RuntimeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  clips = args.clips_per_class * len(GENRES) * len(languages)
  print(json.dumps({"manifest": manifest, "clips": clips}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
