"""MIDI <-> token ids by one of several tokenizations: the seed's 774 event ids or MidiTok's.

`data.midi.tokenizer` picks one:

* `events` (the default): `jaxvae.symbolic.midi`, the Transformer-VAE-GAN's own vocabulary of
  performance events (note-on/off, time shifts of 1/64 s, velocity, tempo, instrument family).
* `remi`, `tsd`, `midi_like`: MidiTok's REMI, TSD and MIDI-Like (the `miditok` package: its
  tokenizer objects, its BPE / Unigram training and its JSON files; nothing re-implemented).
  Their settings are `data.midi.miditok.*` (positions per beat, velocity and tempo bins, programs,
  drums); one token stream holds every track (Program tokens switch the instrument). With
  `data.midi.vocab_size` > the base vocabulary, a BPE (or `data.midi.vocab_model` = Unigram)
  vocabulary is learned on the training split's files.

Every tokenizer shares the framing ids PAD = 0, START = 1, END = 2 (MidiTok's PAD, BOS and EOS
are made in that order, MASK = 3 in the events' UNK place), so masks, windows and samplers are
the same for all. A tokenizer is rebuilt from its `record` (JSON: the kind, the settings and a
trained vocabulary), which the token store and the run file keep; its `fingerprint` (a hash of
the record) is what a store, a checkpoint and an export are matched by.

Decoding never raises on what a model generates: ids out of range and framing ids are dropped,
decoding stops at the first END, and MidiTok tokens that break the tokenization's grammar (a
token type that cannot follow the previous one) are skipped; `decode_counted` says how many.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import io
import json
import logging
import os
import tempfile

import numpy as np
import pretty_midi

from jaxvae.errors import ConfigError
from jaxvae.errors import DataError
from jaxvae.errors import MidiError
from jaxvae.symbolic import midi

PAD, START, END = midi.PAD, midi.START, midi.END
KINDS = ("events", "remi", "tsd", "midi_like")
MIDITOK_CLASSES = {"remi": "REMI", "tsd": "TSD", "midi_like": "MIDILike"}
VOCAB_MODELS = ("BPE", "Unigram")
SPECIAL_TOKENS = ("PAD", "BOS", "EOS", "MASK")  # ids 0..3: PAD, START, END as the events'
# MidiTok token types that start a note (Pitch in REMI / TSD, NoteOn in MIDI-Like).
_ONSET_TYPES = ("Pitch", "PitchDrum", "NoteOn", "DrumOn")


@dataclasses.dataclass
class Encoded:
  """One piece: `ids` int32 [n] (no framing ids), `bars` int [m] the positions in `ids` where a
  bar begins (for bar-aligned windows), `notes` how many notes the ids hold."""

  ids: np.ndarray
  bars: np.ndarray
  notes: int


def settings(midi_config) -> dict:
  """The tokenizer's settings from `config.data.midi` (checked; ConfigError names the key)."""
  m = midi_config
  kind = m.get("tokenizer", "events")
  if kind not in KINDS:
    raise ConfigError(f"config key 'data.midi.tokenizer' is {kind!r}; expected one of {KINDS}")
  vocab_size, model = int(m.get("vocab_size", 0)), m.get("vocab_model", "BPE")
  if model not in VOCAB_MODELS:
    raise ConfigError(
      f"config key 'data.midi.vocab_model' is {model!r}; expected one of {VOCAB_MODELS}"
    )
  if kind == "events":
    if vocab_size:
      raise ConfigError(
        f"config key 'data.midi.vocab_size' is {vocab_size}; a learned vocabulary needs a "
        "MidiTok tokenizer (data.midi.tokenizer=remi, tsd or midi_like); 0 for the events"
      )
    return {"kind": "events", "vocab": midi.DEFAULT.size}
  t = m.miditok
  positive = {"beat_res": t.beat_res, "num_velocities": t.num_velocities}
  positive["num_tempos"] = t.num_tempos
  for key, value in positive.items():
    if not isinstance(value, int) or value < 1:
      raise ConfigError(
        f"config key 'data.midi.miditok.{key}' is {value!r}; expected a positive integer"
      )
  if not 1 <= t.num_velocities <= 127:
    raise ConfigError(
      f"config key 'data.midi.miditok.num_velocities' is {t.num_velocities}; expected 1..127"
    )
  if vocab_size < 0:
    raise ConfigError(f"config key 'data.midi.vocab_size' is {vocab_size}; expected >= 0")
  return {
    "kind": kind,
    "beat_res": int(t.beat_res),
    "num_velocities": int(t.num_velocities),
    "tempos": bool(t.tempos),
    "num_tempos": int(t.num_tempos),
    "programs": bool(t.programs),
    "drums": bool(t.drums),
    "vocab_size": vocab_size,
    "vocab_model": model if vocab_size else "",
  }


def fingerprint(record: dict) -> str:
  """A short hash of a tokenizer record: equal records, equal ids. The package versions MidiTok
  writes into its file are left out (an upgrade that keeps the vocabulary keeps the hash)."""

  def without_versions(value):
    if isinstance(value, dict):
      return {k: without_versions(v) for k, v in value.items() if not k.endswith("_version")}
    return value

  text = json.dumps(without_versions(record), sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode()).hexdigest()[:16]


class Tokenizer(abc.ABC):
  """The interface every tokenization gives the rest of the library."""

  kind: str
  vocab_size: int
  record: dict

  @property
  def fingerprint(self) -> str:
    return fingerprint(self.record)

  def describe(self) -> str:
    """'remi (BPE 2000 ids, 1a2b3c4d5e6f7a8b)': the kind, the ids and the fingerprint."""
    learned = getattr(self, "settings", {}).get("vocab_model")
    learned = f"{learned} " if learned and self.trained else ""
    return f"{self.kind} ({learned}{self.vocab_size} ids, {self.fingerprint})"

  @property
  def trained(self) -> bool:
    """Whether a vocabulary was learned (BPE / Unigram ids stand for several tokens)."""
    return False

  @property
  def planned_vocab_size(self) -> int:
    """The ids a model of this tokenizer will see: `vocab_size`, or before a vocabulary is
    learned the size asked for (a model sized without data, e.g. by --mode=summary)."""
    asked = getattr(self, "settings", {}).get("vocab_size", 0)
    return asked if asked and not self.trained else self.vocab_size

  @abc.abstractmethod
  def load(self, source):
    """A MIDI file (path) read once for several `encode` calls (`pretty_midi.PrettyMIDI` and
    what `load` returns pass through). Raises MidiError naming the file."""

  @abc.abstractmethod
  def encode(self, source, augment: dict | None = None, rng=None) -> Encoded:
    """A MIDI file (path), `pretty_midi.PrettyMIDI` or `load`ed piece -> `Encoded`; `augment`
    (one token-store augmentation record: transpose, tempo_stretch or velocity_jitter) is
    applied to the music before it is tokenized. Raises MidiError naming the file."""

  @abc.abstractmethod
  def decode_counted(self, ids) -> tuple[pretty_midi.PrettyMIDI, int]:
    """Ids -> (the music, how many ids could not be decoded and were skipped)."""

  def decode(self, ids) -> pretty_midi.PrettyMIDI:
    return self.decode_counted(ids)[0]

  @abc.abstractmethod
  def onsets_per_id(self) -> np.ndarray:
    """int32 [vocab_size]: how many notes each id starts (NLL per note = NLL / these)."""


# ----------------------------------------------------------------------------- events


def _bar_positions(times: np.ndarray, bar_times: np.ndarray) -> np.ndarray:
  """For each bar start time, the first token position at or after it (deduplicated)."""
  if not len(times):
    return np.zeros((0,), np.int64)
  positions = np.searchsorted(times, np.asarray(bar_times) - 1e-9, side="left")
  return np.unique(positions[positions < len(times)])


class EventTokenizer(Tokenizer):
  """The seed's vocabulary (`jaxvae.symbolic.midi`); augmentations act on its tokens."""

  kind = "events"

  def __init__(self, vocab: midi.Vocab = midi.DEFAULT):
    self.vocab = vocab
    self.vocab_size = vocab.size
    self.record = {"kind": "events", "vocab": vocab.size}

  def load(self, source):
    return midi.load(source)

  def encode(self, source, augment=None, rng=None) -> Encoded:
    pm, name = source if isinstance(source, tuple) else self.load(source)
    try:
      tokens = midi.encode(pm, self.vocab)
    except MidiError as e:
      raise MidiError(name, e.reason) from None
    try:
      downbeats = pm.get_downbeats()
    except (ValueError, IndexError):  # a time signature pretty_midi cannot lay bars out for
      downbeats = np.zeros((1,))
    augment = augment or {}
    if "transpose" in augment:
      tokens = midi.transpose(tokens, augment["transpose"], self.vocab)
    elif "tempo_stretch" in augment:
      tokens = midi.stretch_tempo(tokens, augment["tempo_stretch"], self.vocab)
      downbeats = downbeats * augment["tempo_stretch"]
    elif "velocity_jitter" in augment:
      tokens = midi.jitter_velocity(tokens, rng, augment["velocity_jitter"], self.vocab)
    times = midi.token_times(tokens, self.vocab)
    notes = int(np.count_nonzero(self.onsets_per_id()[tokens]))
    return Encoded(tokens, _bar_positions(times, downbeats), notes)

  def decode_counted(self, ids):
    return midi.decode(ids, self.vocab), 0

  def onsets_per_id(self) -> np.ndarray:
    out = np.zeros((self.vocab_size,), np.int32)
    out[self.vocab.note_on_offset : self.vocab.note_off_offset] = 1
    return out


# ----------------------------------------------------------------------------- MidiTok


def _miditok():
  try:
    import miditok
  except ImportError:
    raise ConfigError(
      "data.midi.tokenizer remi / tsd / midi_like needs MidiTok (pip install miditok, or "
      "jaxvae[midi])"
    ) from None
  return miditok


def _score_of(source):
  """(symusic.Score, name) of a path, a PrettyMIDI or a loaded (Score, name); MidiError naming
  the file."""
  import symusic

  if isinstance(source, tuple):
    return source[0].copy(), source[1]
  if isinstance(source, pretty_midi.PrettyMIDI):
    buf = io.BytesIO()
    source.write(buf)
    return symusic.Score.from_midi(buf.getvalue()), "<PrettyMIDI>"
  name = midi.checked_path(source)
  try:
    return symusic.Score(name), name
  except Exception as e:  # symusic's parser reports any damage as a RuntimeError
    reason = (str(e).splitlines() or [type(e).__name__])[0][:120]
    raise MidiError(name, f"unreadable MIDI ({reason})") from None


def _close_overlaps(score) -> None:
  """Ends a note where the same pitch starts again on its track (notes left without length
  go): a NoteOn/NoteOff stream such as MIDI-Like's cannot tell overlapping notes of one pitch
  apart, so they are made not to overlap, as the events tokenizer does."""
  import symusic

  for track in score.tracks:
    a = track.notes.numpy()
    if not len(a["time"]):
      continue
    order = np.lexsort((a["time"], a["pitch"]))
    a = {k: v[order] for k, v in a.items()}
    end = a["time"] + a["duration"]
    same = a["pitch"][1:] == a["pitch"][:-1]
    end[:-1] = np.where(same, np.minimum(end[:-1], a["time"][1:]), end[:-1])
    keep = end > a["time"]
    a = {k: v[keep] for k, v in a.items()}
    back = np.argsort(a["time"], kind="stable")
    duration = (end[keep] - a["time"])[back]
    a = {k: v[back] for k, v in a.items()}
    track.notes = symusic.Note.from_numpy(a["time"], duration, a["pitch"], a["velocity"], "tick")


def _count_notes(score) -> int:
  return sum(len(track.notes) for track in score.tracks)


class MidiTokTokenizer(Tokenizer):
  """REMI, TSD or MIDI-Like from MidiTok, one token stream for every track."""

  def __init__(self, record: dict):
    miditok = _miditok()
    self.kind = record["settings"]["kind"]
    self.settings = dict(record["settings"])
    cls = getattr(miditok, MIDITOK_CLASSES[self.kind])
    if record.get("miditok"):  # a saved (maybe trained) tokenizer: MidiTok reloads its file
      with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tokenizer.json")
        with open(path, "w", encoding="utf-8") as f:
          json.dump(record["miditok"], f)
        self.tok = cls(params=path)
    else:
      self.tok = cls(self._config(miditok))
    self._record_self(record if record.get("miditok") else None)

  def _config(self, miditok):
    s = self.settings
    return miditok.TokenizerConfig(
      pitch_range=(midi.DEFAULT.pitch_min, midi.DEFAULT.pitch_min + midi.DEFAULT.n_pitch),
      beat_res={(0, 4): s["beat_res"], (4, 12): max(1, s["beat_res"] // 2)},
      num_velocities=s["num_velocities"],
      special_tokens=list(SPECIAL_TOKENS),
      use_tempos=s["tempos"],
      num_tempos=s["num_tempos"],
      use_programs=True,
      one_token_stream_for_programs=True,
      use_pitchdrum_tokens=True,
    )

  def _record_self(self, loaded: dict | None = None):
    """The record of this tokenizer: the one it was loaded from (kept as it is, so that its
    fingerprint never changes), else MidiTok's file of it now."""
    if loaded is None:
      with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tokenizer.json")
        self.tok.save(path)
        with open(path, encoding="utf-8") as f:
          saved = json.load(f)
      loaded = {"kind": self.kind, "settings": self.settings, "miditok": saved}
    self.record = loaded
    self.vocab_size = len(self.tok)
    ids = [self.tok.vocab.get(f"{name}_None") for name in SPECIAL_TOKENS[:3]]
    if ids != [PAD, START, END]:
      raise ConfigError(
        f"this MidiTok ({getattr(_miditok(), '__version__', '?')}) made the framing ids {ids}, "
        "not [0, 1, 2]: install the miditok version jaxvae pins (pip install 'miditok>=3.1,<3.2')"
      )
    self._base_lengths = None
    self._onsets = None

  @property
  def trained(self) -> bool:
    return bool(self.tok.is_trained)

  def train(self, paths: list[str]) -> int:
    """Learns the BPE / Unigram vocabulary of `settings['vocab_size']` ids on the files of
    `paths` it can read (the others are left to the store build to count); returns how many it
    learned on. DataError when it can read none."""
    s = self.settings
    if not s["vocab_size"]:
      return 0
    if s["vocab_size"] <= len(self.tok):
      raise ConfigError(
        f"config key 'data.midi.vocab_size' is {s['vocab_size']}; a learned vocabulary must be "
        f"larger than {self.kind}'s base vocabulary of {len(self.tok)} ids"
      )
    # Learned on the music as it is tokenized (programs, drums and overlaps already handled),
    # not on the raw files MidiTok would read itself.
    with tempfile.TemporaryDirectory() as tmp:
      prepared = []
      for k, path in enumerate(paths):
        target = os.path.join(tmp, f"{k}.mid")
        try:
          self.quantized(path)[0].dump_midi(target)
        except Exception:  # noqa: BLE001  unreadable: the store build counts it as a bad file
          continue
        prepared.append(target)
      if not prepared:
        raise DataError(f"no readable training MIDI file to learn a vocabulary on ({len(paths)})")
      logging.info(
        "learning a %s vocabulary of %d ids on %d files",
        s["vocab_model"],
        s["vocab_size"],
        len(prepared),
      )
      self.tok.train(vocab_size=s["vocab_size"], model=s["vocab_model"], files_paths=prepared)
    self._record_self()
    if len(self.tok) < s["vocab_size"]:
      logging.warning(
        "%s: learned %d ids of the %d data.midi.vocab_size asked for (the training split has no "
        "more pairs to merge)",
        s["vocab_model"],
        len(self.tok),
        s["vocab_size"],
      )
    return len(prepared)

  # What the music goes through before MidiTok reads it.
  def _prepared(self, score, augment, rng):
    import symusic

    s = self.settings
    tracks = [t for t in score.tracks if s["drums"] or not t.is_drum]
    if not s["programs"]:  # one piano: every melodic track on program 0 (drums stay drums)
      for t in tracks:
        if not t.is_drum:
          t.program = 0
    score.tracks = tracks
    augment = augment or {}
    if "transpose" in augment:
      for t in score.tracks:
        if not t.is_drum:  # a drum pitch is an instrument, not a note
          t.shift_pitch(int(augment["transpose"]), inplace=True)
    elif "tempo_stretch" in augment:  # beats stay where they are; the tempo slows down
      if not len(score.tempos):  # MIDI's default, made explicit so that it can slow down
        score.tempos.append(symusic.Tempo(0, qpm=120.0))
      for tempo in score.tempos:
        tempo.qpm = tempo.qpm / float(augment["tempo_stretch"])
    elif "velocity_jitter" in augment:
      width = max(1, 128 // s["num_velocities"])
      for t in score.tracks:
        notes = t.notes.numpy()
        moved = notes["velocity"] + width * rng.integers(
          -augment["velocity_jitter"], augment["velocity_jitter"] + 1, size=len(notes["velocity"])
        )
        vel = np.clip(moved, 1, 127).astype(notes["velocity"].dtype)
        for note, v in zip(t.notes, vel.tolist()):
          note.velocity = v
    return score

  def load(self, source):
    return _score_of(source)

  def quantized(self, source, augment=None, rng=None):
    """(the music exactly as it is tokenized: a `symusic.Score` at the tokenizer's resolution,
    its name, the notes the file had)."""
    score, name = _score_of(source)
    score = self._prepared(score, augment, rng)
    kept = self.tok.preprocess_score(score.copy())
    if self.kind == "midi_like":
      _close_overlaps(kept)
    return kept, name, _count_notes(score)

  def encode(self, source, augment=None, rng=None) -> Encoded:
    name = source[1] if isinstance(source, tuple) else getattr(source, "filename", str(source))
    try:
      kept, name, before = self.quantized(source, augment, rng)
      notes = _count_notes(kept)
      if not notes:
        raise MidiError(name, f"no notes {self.kind} can express ({before} in the file)")
      seq = self.tok.encode(kept, no_preprocess_score=True)
    except MidiError:
      raise
    except Exception as e:  # noqa: BLE001  whatever MidiTok cannot take is one bad file
      raise MidiError(name, f"{self.kind} cannot tokenize it ({type(e).__name__}: {e})") from None
    ids = np.asarray(seq.ids, np.int32)
    return Encoded(ids, self._bars(kept, seq, len(ids)), notes)

  def _bars(self, score, seq, n_ids: int) -> np.ndarray:
    """Bar starts (of the first time signature) as positions in the (maybe BPE) ids."""
    times = np.asarray([e.time for e in seq.events], np.float64)
    if not len(times):
      return np.zeros((0,), np.int64)
    num, den = 4, 4
    if len(score.time_signatures):
      num, den = score.time_signatures[0].numerator, score.time_signatures[0].denominator
    bar = score.ticks_per_quarter * 4 * num / den
    base = _bar_positions(times, np.arange(0.0, times[-1] + bar, bar))
    if not self.trained:
      return base
    # A learned id stands for several base tokens; bars never split one (MidiTok learns
    # within bars), so a bar's base position is the start of exactly one id.
    starts = np.concatenate([[0], np.cumsum(self.base_lengths()[seq.ids])])[:n_ids]
    return np.unique(np.searchsorted(starts, base, side="left"))

  def base_lengths(self) -> np.ndarray:
    """int64 [vocab_size]: base tokens per id (1 without a learned vocabulary)."""
    if self._base_lengths is None:
      self._base_lengths = np.asarray([len(t) for t in self._base_tokens()], np.int64)
    return self._base_lengths

  def _base_tokens(self) -> list[list[str]]:
    """Each id's base token strings."""
    miditok = _miditok()
    out = []
    for i in range(self.vocab_size):
      if not self.trained:
        out.append([self.tok[i]])
        continue
      seq = miditok.TokSequence(ids=[i], are_ids_encoded=True)
      self.tok.decode_token_ids(seq)
      out.append([self.tok[j] for j in seq.ids])
    return out

  def onsets_per_id(self) -> np.ndarray:
    if self._onsets is None:
      self._onsets = np.asarray(
        [sum(t.split("_")[0] in _ONSET_TYPES for t in toks) for toks in self._base_tokens()],
        np.int32,
      )
    return self._onsets

  def _grammatical(self, tokens: list[str]) -> list[str]:
    """Tokens whose type may follow the previous kept one (MidiTok's own type graph)."""
    graph = self.tok.tokens_types_graph
    kept, previous = [], None
    for token in tokens:
      kind = token.split("_")[0]
      if kind not in graph:
        continue
      if previous is None or kind in graph[previous]:
        kept.append(token)
        previous = kind
    return kept

  def decode_counted(self, ids):
    score, skipped = self.decode_score(ids)
    return (_to_pretty_midi(score) if score is not None else pretty_midi.PrettyMIDI()), skipped

  def decode_score(self, ids):
    """(the `symusic.Score` in MidiTok's ticks or None, ids skipped): `decode_counted`'s."""
    miditok = _miditok()
    ids = [int(i) for i in np.asarray(ids).reshape(-1).tolist()]
    if END in ids:
      ids = ids[: ids.index(END)]
    ids = [i for i in ids if 0 <= i < self.vocab_size and i >= len(SPECIAL_TOKENS)]
    if not ids:
      return None, 0
    if self.trained:
      seq = miditok.TokSequence(ids=list(ids), are_ids_encoded=True)
      self.tok.decode_token_ids(seq)
      base_ids = list(seq.ids)
    else:
      base_ids = ids
    tokens = [self.tok[i] for i in base_ids]
    kept = self._grammatical(tokens)
    skipped = len(tokens) - len(kept)
    try:
      return self.tok.decode(miditok.TokSequence(tokens=kept)), skipped
    except Exception:  # MidiTok gave up on what was left: nothing is decoded, all counted
      return None, len(tokens)


def _to_pretty_midi(score) -> pretty_midi.PrettyMIDI:
  """A symusic Score -> PrettyMIDI, note times in seconds (no tick arithmetic to overflow)."""
  seconds = score.to("second")
  pm = pretty_midi.PrettyMIDI(resolution=480)
  for track in seconds.tracks:
    inst = pretty_midi.Instrument(
      program=int(track.program), is_drum=bool(track.is_drum), name=track.name
    )
    for n in track.notes:
      if n.duration > 0 and 0 <= n.pitch < 128:
        start = float(n.time)
        inst.notes.append(
          pretty_midi.Note(
            int(max(1, min(127, n.velocity))), int(n.pitch), start, start + n.duration
          )
        )
    if inst.notes:
      pm.instruments.append(inst)
  return pm


# ----------------------------------------------------------------------------- building


def make(spec: dict) -> Tokenizer:
  """A tokenizer from `settings(...)` (untrained) or from a saved `record`."""
  if spec.get("kind") == "events":
    size = int(spec.get("vocab", midi.DEFAULT.size))
    if size != midi.DEFAULT.size:
      raise ConfigError(
        f"an events tokenizer of {size} ids; this library's has {midi.DEFAULT.size}"
      )
    return EventTokenizer()
  if "settings" in spec:
    return MidiTokTokenizer(spec)
  return MidiTokTokenizer({"kind": spec["kind"], "settings": spec})


def from_config(midi_config) -> Tokenizer:
  """The (untrained) tokenizer `config.data.midi` describes."""
  return make(settings(midi_config))


def window_starts(n_ids: int, seq_len: int, overlap: int, bars) -> list[int]:
  """Where each of `windows`' bar-aligned windows starts in START + ids + END (`n_ids` ids)."""
  if seq_len < 2 or not 0 <= overlap < seq_len:
    raise ValueError(f"windows: need seq_len >= 2 and 0 <= overlap < seq_len, got {seq_len}")
  starts_at = np.asarray(bars, np.int64) + 1  # positions after START
  stride, starts = seq_len - overlap, [0]
  while starts[-1] + seq_len < n_ids + 2:
    reach = starts[-1] + stride
    # A bar start at least half a stride on (a bar just after the window's own start would
    # give a window that repeats this one).
    near = starts_at[(starts_at >= starts[-1] + max(1, stride // 2)) & (starts_at <= reach)]
    later = starts_at[(starts_at > reach) & (starts_at <= starts[-1] + seq_len)]
    # No bar that close: a bar this window still reaches, else a start off the bars.
    starts.append(int(near[-1]) if len(near) else int(later[0]) if len(later) else reach)
  return starts


def windows(ids, seq_len: int, overlap: int = 0, bars=None) -> np.ndarray:
  """int32 [n, seq_len] windows of START + ids + END (PAD-filled), as `midi.windows`; with
  `bars` (positions in `ids` where a bar begins) every window after the first starts on a bar:
  the latest bar start at most `seq_len - overlap` tokens after the previous window's start
  (MusicVAE's bar-aligned windows); when a bar is longer than that, the next bar the window
  still reaches, else (a bar longer than a window) `seq_len - overlap` tokens on."""
  if bars is None:
    return midi.windows(ids, seq_len, overlap)
  ids = np.asarray(ids, np.int32).reshape(-1)
  full = np.concatenate([[START], ids, [END]]).astype(np.int32)
  starts = window_starts(len(ids), seq_len, overlap, bars)
  out = np.full((len(starts), seq_len), PAD, np.int32)
  for k, s in enumerate(starts):
    piece = full[s : s + seq_len]
    out[k, : len(piece)] = piece
  return out
