"""MIDI <-> event tokens: the Transformer-VAE-GAN's vocabulary (774 ids by default).

A piece becomes a flat stream of performance events, sorted by time:

    PAD START END UNK | NOTE_ON x 88 | NOTE_OFF x 88 | TIME_SHIFT x 512 |
    VELOCITY x 32 | SUSTAIN on/off | TEMPO x 32 | INSTRUMENT x 16

Choices a reader needs to know (all parametrised by `Vocab`):

* Specials: PAD=0 so that zero-filled arrays are padding, then START=1, END=2, UNK=3.
  `encode` emits no specials; `windows` adds START before a piece and END after it.
* Time is quantized to a grid of `step_ms` (15.625 ms = 1/64 s). TIME_SHIFT k advances
  the clock by (k+1) steps, so one token spans up to 8 s; longer gaps use several.
  Shifts are computed from quantized *absolute* times, so errors never accumulate:
  every onset and offset is within half a step of the original.
* VELOCITY: bins of 4 over 1..127 (bin b covers 4b+1..4b+4); emitted only when the bin
  changes; decoded to a value inside the bin.
* TEMPO: 32 bins log-spaced over 60..200 BPM (tempo is heard as a ratio); tempi outside
  the range are clipped and counted. Tempo only labels the grid in seconds: note times
  are absolute, so a tempo token never moves a note.
* INSTRUMENT: General MIDI family `program // 8` for melodic instruments; drums
  (channel 10) get the last id (15). The 16th GM family, Sound Effects (programs
  120..127, rare), is folded into family 14 (Percussive) and counted. An INSTRUMENT
  token switches the instrument that following NOTE_ON/NOTE_OFF/SUSTAIN tokens belong
  to; the decoder makes one `pretty_midi.Instrument` per family (program = 8 * family).
* SUSTAIN: CC64 >= 64 is "on"; emitted per instrument when the pedal state changes.
* Notes of one instrument and pitch never overlap in the stream: a note that is still
  sounding when the same pitch starts again is closed there (a NOTE_ON/NOTE_OFF stream
  could not tell the two apart), and a note left with no length is dropped. Both are
  counted in `EncodeStats`, as are pitches outside 21..108 and the controllers,
  pitch bends and program families the vocabulary cannot express.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import pretty_midi

from jaxvae.errors import MidiError

PAD, START, END, UNK = 0, 1, 2, 3
SPECIAL_NAMES = ("PAD", "START", "END", "UNK")

GM_FAMILIES = (
  "Piano",
  "ChromaticPercussion",
  "Organ",
  "Guitar",
  "Bass",
  "Strings",
  "Ensemble",
  "Brass",
  "Reed",
  "Pipe",
  "SynthLead",
  "SynthPad",
  "SynthEffects",
  "Ethnic",
  "Percussive",
  "SoundEffects",
)

_SUSTAIN_CC = 64
# Order of events that share a time step: a NOTE_OFF must come before a NOTE_ON of the
# same pitch (a note ending where the next one starts), and the pedal state must be set
# before the notes it affects start.
_ORDER_OFF, _ORDER_SUSTAIN, _ORDER_ON = 0, 1, 2


# ----------------------------------------------------------------------------- vocabulary


@dataclasses.dataclass(frozen=True)
class Vocab:
  """Sizes of each event block; the id layout follows from them (see module doc)."""

  n_special: int = 4
  pitch_min: int = 21
  n_pitch: int = 88
  n_time_shift: int = 512
  step_ms: float = 15.625
  n_velocity: int = 32
  n_sustain: int = 2
  n_tempo: int = 32
  tempo_min: float = 60.0
  tempo_max: float = 200.0
  n_instrument: int = 16

  def __post_init__(self):
    checks = {
      "n_special": self.n_special == 4,
      "n_sustain": self.n_sustain == 2,
      "n_pitch": 1 <= self.n_pitch and self.pitch_min + self.n_pitch <= 128,
      "n_time_shift": self.n_time_shift >= 1 and self.step_ms > 0,
      "n_velocity": 1 <= self.n_velocity <= 127,
      "n_tempo": self.n_tempo >= 2 and 0 < self.tempo_min < self.tempo_max,
      # One id is reserved for drums, at least one for melodic instruments.
      "n_instrument": 2 <= self.n_instrument <= 17,
    }
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
      raise ValueError(f"Vocab: invalid value for {', '.join(bad)}: {self}")

  # Offsets of each block, in the documented order.
  @property
  def note_on_offset(self) -> int:
    return self.n_special

  @property
  def note_off_offset(self) -> int:
    return self.note_on_offset + self.n_pitch

  @property
  def time_shift_offset(self) -> int:
    return self.note_off_offset + self.n_pitch

  @property
  def velocity_offset(self) -> int:
    return self.time_shift_offset + self.n_time_shift

  @property
  def sustain_offset(self) -> int:
    return self.velocity_offset + self.n_velocity

  @property
  def tempo_offset(self) -> int:
    return self.sustain_offset + self.n_sustain

  @property
  def instrument_offset(self) -> int:
    return self.tempo_offset + self.n_tempo

  @property
  def size(self) -> int:
    return self.instrument_offset + self.n_instrument

  @property
  def step_s(self) -> float:
    return self.step_ms / 1000.0

  @property
  def drum_family(self) -> int:
    return self.n_instrument - 1

  # Value <-> bin conversions.
  @property
  def velocity_width(self) -> int:
    return -(-127 // self.n_velocity)

  def velocity_bin(self, velocity: int) -> int:
    velocity = min(max(int(velocity), 1), 127)
    return min((velocity - 1) // self.velocity_width, self.n_velocity - 1)

  def bin_velocity(self, b: int) -> int:
    """A velocity inside bin `b` (its middle, rounded down)."""
    w = self.velocity_width
    return min(1 + b * w + (w - 1) // 2, 127)

  def tempo_bin(self, bpm: float) -> int:
    lo, hi = math.log(self.tempo_min), math.log(self.tempo_max)
    x = (math.log(bpm) - lo) / (hi - lo) * (self.n_tempo - 1)
    return min(max(int(math.floor(x + 0.5)), 0), self.n_tempo - 1)

  def bin_tempo(self, b: int) -> float:
    frac = b / (self.n_tempo - 1)
    return self.tempo_min * (self.tempo_max / self.tempo_min) ** frac

  def family(self, program: int, is_drum: bool) -> int:
    if is_drum:
      return self.drum_family
    return min(int(program) // 8, self.drum_family - 1)

  def quantize(self, seconds: float) -> int:
    """Seconds -> grid step (round half up, the same rule everywhere)."""
    return int(math.floor(seconds / self.step_s + 0.5))


DEFAULT = Vocab()


def token_name(token: int, vocab: Vocab = DEFAULT) -> str:
  """Readable name of one id, e.g. 'NOTE_ON_60', 'TIME_SHIFT_62.5ms', 'INSTRUMENT_Drums'."""
  t = int(token)
  v = vocab
  if not 0 <= t < v.size:
    return f"INVALID_{t}"
  if t < v.note_on_offset:
    return SPECIAL_NAMES[t]
  if t < v.note_off_offset:
    return f"NOTE_ON_{t - v.note_on_offset + v.pitch_min}"
  if t < v.time_shift_offset:
    return f"NOTE_OFF_{t - v.note_off_offset + v.pitch_min}"
  if t < v.velocity_offset:
    return f"TIME_SHIFT_{(t - v.time_shift_offset + 1) * v.step_ms:g}ms"
  if t < v.sustain_offset:
    b = t - v.velocity_offset
    return f"VELOCITY_{b * v.velocity_width + 1}-{min((b + 1) * v.velocity_width, 127)}"
  if t < v.tempo_offset:
    return "SUSTAIN_ON" if t == v.sustain_offset else "SUSTAIN_OFF"
  if t < v.instrument_offset:
    return f"TEMPO_{v.bin_tempo(t - v.tempo_offset):.1f}"
  family = t - v.instrument_offset
  if family == v.drum_family:
    return "INSTRUMENT_Drums"
  return f"INSTRUMENT_{GM_FAMILIES[family]}"


# ----------------------------------------------------------------------------- encode


@dataclasses.dataclass
class EncodeStats:
  """What `encode` kept and what it had to drop or change (nothing is dropped silently)."""

  notes: int = 0
  dropped_out_of_range: int = 0  # pitches outside the vocabulary's range
  overlaps_closed: int = 0  # notes cut short by a new onset of the same pitch
  dropped_zero_length: int = 0  # duplicate notes left without length after that
  programs_folded: int = 0  # notes whose GM family has no id of its own
  tempo_clipped: int = 0  # tempo changes outside [tempo_min, tempo_max]
  dropped_control_changes: int = 0  # controllers other than the sustain pedal
  dropped_pitch_bends: int = 0


def checked_path(source) -> str:
  """The path of a MIDI file that exists and is not empty; MidiError naming it otherwise."""
  path = os.fspath(source)
  if not os.path.isfile(path):
    raise MidiError(path, "a directory, not a file" if os.path.isdir(path) else "no such file")
  if os.path.getsize(path) == 0:
    raise MidiError(path, "empty file (0 bytes)")
  return path


def load(source) -> tuple[pretty_midi.PrettyMIDI, str]:
  """(the music, its name) of a path or a PrettyMIDI; MidiError naming a bad file."""
  if isinstance(source, pretty_midi.PrettyMIDI):
    return source, "<PrettyMIDI>"
  path = checked_path(source)
  try:
    return pretty_midi.PrettyMIDI(path), path
  except EOFError as e:
    raise MidiError(path, "truncated MIDI (the data ends inside a chunk)") from e
  # mido and pretty_midi raise many unrelated types (OSError, KeyError, ValueError,
  # IndexError, ...) for corrupt data; one clear error replaces them all.
  except Exception as e:  # noqa: BLE001
    raise MidiError(path, f"unreadable MIDI ({type(e).__name__}: {e})") from e


def _instrument_notes(inst, family, vocab, stats):
  """Quantized (on, off, pitch, velocity) tuples of one instrument's in-range notes."""
  out = []
  for note in inst.notes:
    idx = note.pitch - vocab.pitch_min
    if not 0 <= idx < vocab.n_pitch:
      stats.dropped_out_of_range += 1
      continue
    on = vocab.quantize(note.start)
    # A note shorter than half a step still sounds: give it one step.
    off = max(vocab.quantize(note.end), on + 1)
    out.append((on, off, note.pitch, note.velocity))
  if family != vocab.drum_family and inst.program // 8 > family:
    stats.programs_folded += len(out)
  return out


def _close_overlaps(notes, stats):
  """Per pitch, cut each note at the next onset of that pitch (input from one family)."""
  by_pitch = {}
  for n in sorted(notes):
    by_pitch.setdefault(n[2], []).append(n)
  kept = []
  for group in by_pitch.values():
    for cur, nxt in zip(group, group[1:] + [None]):
      on, off, pitch, vel = cur
      if nxt is not None and nxt[0] < off:
        stats.overlaps_closed += 1
        off = nxt[0]
        if off <= on:
          stats.dropped_zero_length += 1
          continue
      kept.append((on, off, pitch, vel))
  return kept


def _sustain_events(controls, family, vocab):
  """An event tuple (see `_collect_events`) for each change of the pedal state."""
  events, state = [], False
  for cc in sorted(controls, key=lambda c: c.time):
    on = cc.value >= 64
    if on != state:
      events.append((vocab.quantize(cc.time), 1, family, _ORDER_SUSTAIN, int(on), 0))
      state = on
  return events


def _tempo_events(pm, vocab, stats):
  events, last = [], None
  for time, bpm in zip(*pm.get_tempo_changes()):
    if not vocab.tempo_min <= bpm <= vocab.tempo_max:
      stats.tempo_clipped += 1
    b = vocab.tempo_bin(bpm)
    if b != last:
      # Group 0: a tempo change comes before the notes of its time step.
      events.append((vocab.quantize(time), 0, 0, 0, b, 0))
      last = b
  return events


def _collect_events(pm, vocab, stats):
  """All events as sortable tuples (step, group, family, order, value, velocity)."""
  notes_by_family, controls_by_family = {}, {}
  for inst in pm.instruments:
    family = vocab.family(inst.program, inst.is_drum)
    notes_by_family.setdefault(family, []).extend(_instrument_notes(inst, family, vocab, stats))
    sustain = [c for c in inst.control_changes if c.number == _SUSTAIN_CC]
    stats.dropped_control_changes += len(inst.control_changes) - len(sustain)
    stats.dropped_pitch_bends += len(inst.pitch_bends)
    controls_by_family.setdefault(family, []).extend(sustain)
  events = _tempo_events(pm, vocab, stats)
  for family, notes in notes_by_family.items():
    for on, off, pitch, vel in _close_overlaps(notes, stats):
      events.append((on, 1, family, _ORDER_ON, pitch, vel))
      events.append((off, 1, family, _ORDER_OFF, pitch, 0))
      stats.notes += 1
  for family, controls in controls_by_family.items():
    events.extend(_sustain_events(controls, family, vocab))
  return sorted(events)


def _shift_tokens(steps: int, vocab: Vocab) -> list[int]:
  """TIME_SHIFT ids that advance the clock by `steps` (several when > 8 s)."""
  full, rest = divmod(steps, vocab.n_time_shift)
  out = [vocab.time_shift_offset + vocab.n_time_shift - 1] * full
  if rest:
    out.append(vocab.time_shift_offset + rest - 1)
  return out


def _events_to_tokens(events, vocab: Vocab) -> list[int]:
  tokens, now, family_now, vel_bin_now = [], 0, None, None
  for step, group, family, order, value, velocity in events:
    tokens.extend(_shift_tokens(step - now, vocab))
    now = step
    if group == 0:
      tokens.append(vocab.tempo_offset + value)
      continue
    if family != family_now:
      tokens.append(vocab.instrument_offset + family)
      family_now = family
    if order == _ORDER_SUSTAIN:
      tokens.append(vocab.sustain_offset + (0 if value else 1))
    elif order == _ORDER_OFF:
      tokens.append(vocab.note_off_offset + value - vocab.pitch_min)
    else:
      b = vocab.velocity_bin(velocity)
      if b != vel_bin_now:
        tokens.append(vocab.velocity_offset + b)
        vel_bin_now = b
      tokens.append(vocab.note_on_offset + value - vocab.pitch_min)
  return tokens


def encode(source, vocab: Vocab = DEFAULT, *, return_stats: bool = False):
  """A MIDI file (path) or `pretty_midi.PrettyMIDI` -> int32 token array.

  Raises `MidiError(path, reason)` for a missing, unreadable or corrupt file, and for
  a file with no notes in the vocabulary's pitch range. With `return_stats=True`
  returns `(tokens, EncodeStats)`.
  """
  pm, name = load(source)
  stats = EncodeStats()
  events = _collect_events(pm, vocab, stats)
  if stats.notes == 0:
    lo, hi = vocab.pitch_min, vocab.pitch_min + vocab.n_pitch - 1
    raise MidiError(
      name, f"no notes in pitch range {lo}-{hi} ({stats.dropped_out_of_range} outside it)"
    )
  tokens = np.asarray(_events_to_tokens(events, vocab), dtype=np.int32)
  return (tokens, stats) if return_stats else tokens


# ----------------------------------------------------------------------------- decode


class _Decoder:
  """Replays a token stream: a clock, the current instrument and velocity, open notes."""

  def __init__(self, vocab: Vocab):
    self.v = vocab
    self.now = 0
    self.family = 0  # tokens before any INSTRUMENT event play on a piano
    self.velocity = 64
    self.open = {}  # (family, pitch) -> (start step, velocity)
    self.instruments = {}  # family -> pretty_midi.Instrument
    self.tempi = []  # (step, bpm)

  def instrument(self, family: int) -> pretty_midi.Instrument:
    if family not in self.instruments:
      drum = family == self.v.drum_family
      self.instruments[family] = pretty_midi.Instrument(
        program=0 if drum else family * 8,
        is_drum=drum,
        name="Drums" if drum else GM_FAMILIES[family],
      )
    return self.instruments[family]

  def close(self, key, end: int):
    start, velocity = self.open.pop(key)
    if end > start:  # a note restarted at its own onset has no length: drop it
      s = self.v.step_s
      self.instrument(key[0]).notes.append(pretty_midi.Note(velocity, key[1], start * s, end * s))

  def step(self, t: int):
    v = self.v
    if t < v.note_on_offset:
      return  # PAD / START / UNK carry no event (END is handled by the caller)
    if t < v.note_off_offset:
      key = (self.family, t - v.note_on_offset + v.pitch_min)
      if key in self.open:
        self.close(key, self.now)
      self.open[key] = (self.now, self.velocity)
    elif t < v.time_shift_offset:
      key = (self.family, t - v.note_off_offset + v.pitch_min)
      if key in self.open:  # an unmatched NOTE_OFF is ignored
        self.close(key, self.now)
    elif t < v.velocity_offset:
      self.now += t - v.time_shift_offset + 1
    elif t < v.sustain_offset:
      self.velocity = v.bin_velocity(t - v.velocity_offset)
    elif t < v.tempo_offset:
      value = 127 if t == v.sustain_offset else 0
      self.instrument(self.family).control_changes.append(
        pretty_midi.ControlChange(_SUSTAIN_CC, value, self.now * v.step_s)
      )
    elif t < v.instrument_offset:
      bpm = v.bin_tempo(t - v.tempo_offset)
      if self.tempi and self.tempi[-1][0] == self.now:
        self.tempi[-1] = (self.now, bpm)
      else:
        self.tempi.append((self.now, bpm))
    elif t < v.size:
      self.family = t - v.instrument_offset

  def finish(self):
    for key in list(self.open):
      self.close(key, max(self.now, self.open[key][0] + 1))


def _set_tempo_changes(pm: pretty_midi.PrettyMIDI, tempi, step_s: float):
  """Write tempo changes into `pm` (absolute note times do not move).

  pretty_midi has no public API for this; `_tick_scales` is the list its reader
  fills and its writer turns into set_tempo events.
  """
  if not tempi or tempi[0][0] != 0:
    tempi = [(0, 120.0)] + list(tempi)
  scales, tick, prev_time, prev_scale = [], 0, 0.0, None
  for step, bpm in tempi:
    time = step * step_s
    if prev_scale is not None:
      tick += int(round((time - prev_time) / prev_scale))
    scale = 60.0 / (bpm * pm.resolution)
    scales.append((tick, scale))
    prev_time, prev_scale = time, scale
  pm._tick_scales = scales  # pylint: disable=protected-access
  pm._update_tick_to_time(scales[-1][0] + 1)  # pylint: disable=protected-access


def decode(tokens, vocab: Vocab = DEFAULT) -> pretty_midi.PrettyMIDI:
  """Token ids -> `pretty_midi.PrettyMIDI` (stops at the first END; ids out of range,
  PAD, START, UNK and unmatched NOTE_OFFs are ignored; notes still open are closed at
  the last time step)."""
  dec = _Decoder(vocab)
  for t in np.asarray(tokens).reshape(-1).tolist():
    if t == END:
      break
    dec.step(t)
  dec.finish()
  pm = pretty_midi.PrettyMIDI(resolution=480)
  _set_tempo_changes(pm, dec.tempi, vocab.step_s)
  for family in sorted(dec.instruments):
    inst = dec.instruments[family]
    inst.notes.sort(key=lambda n: (n.start, n.pitch))
    pm.instruments.append(inst)
  return pm


def token_times(tokens, vocab: Vocab = DEFAULT) -> np.ndarray:
  """float64 [n]: the clock (seconds) when each token is read, before its own time shift."""
  tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
  is_shift = (tokens >= vocab.time_shift_offset) & (tokens < vocab.velocity_offset)
  steps = np.where(is_shift, tokens - vocab.time_shift_offset + 1, 0)
  return (np.cumsum(steps) - steps) * vocab.step_s


# ----------------------------------------------------------------------------- windows


def windows(tokens, seq_len: int, overlap: int = 0) -> np.ndarray:
  """Cut one piece into int32 windows `[n, seq_len]` with `overlap` shared tokens.

  The piece is framed as START + tokens + END, so START opens only the first window
  and END sits only in the last; the last window is filled up with PAD. Windows start
  every `seq_len - overlap` tokens until one reaches the END. A window that starts
  mid-piece carries no INSTRUMENT / VELOCITY state from before it: decoding it alone
  uses the decoder's defaults (piano, velocity 64) until its first such token.
  """
  if seq_len < 2 or not 0 <= overlap < seq_len:
    raise ValueError(
      f"windows: need seq_len >= 2 and 0 <= overlap < seq_len, "
      f"got seq_len={seq_len}, overlap={overlap}"
    )
  body = np.asarray(tokens, dtype=np.int32).reshape(-1)
  full = np.concatenate([[START], body, [END]]).astype(np.int32)
  stride = seq_len - overlap
  n = 1 + max(0, -(-(len(full) - seq_len) // stride))
  padded = np.full(stride * (n - 1) + seq_len, PAD, dtype=np.int32)
  padded[: len(full)] = full
  idx = np.arange(n)[:, None] * stride + np.arange(seq_len)[None, :]
  return padded[idx]


# ----------------------------------------------------------------------------- augmentation


def _current_family(tokens: np.ndarray, vocab: Vocab) -> np.ndarray:
  """For each position, the family set by the latest INSTRUMENT token (0 before any)."""
  is_inst = (tokens >= vocab.instrument_offset) & (tokens < vocab.size)
  last = np.maximum.accumulate(np.where(is_inst, np.arange(len(tokens)), -1))
  return np.where(last >= 0, tokens[np.maximum(last, 0)] - vocab.instrument_offset, 0)


def transpose(tokens, semitones: int, vocab: Vocab = DEFAULT) -> np.ndarray:
  """Shift every melodic NOTE_ON/NOTE_OFF by `semitones`; drums keep their pitches
  (a drum pitch is an instrument, not a note). Notes moved out of range are dropped,
  both their NOTE_ON and NOTE_OFF."""
  tokens = np.asarray(tokens, dtype=np.int32).reshape(-1)
  v = vocab
  on = (tokens >= v.note_on_offset) & (tokens < v.note_off_offset)
  off = (tokens >= v.note_off_offset) & (tokens < v.time_shift_offset)
  idx = np.where(on, tokens - v.note_on_offset, tokens - v.note_off_offset)
  moved = (on | off) & (_current_family(tokens, v) != v.drum_family)
  new_idx = idx + semitones
  keep = ~moved | ((new_idx >= 0) & (new_idx < v.n_pitch))
  return np.where(moved, tokens + semitones, tokens)[keep].astype(np.int32)


def stretch_tempo(tokens, factor: float, vocab: Vocab = DEFAULT) -> np.ndarray:
  """Play `factor` times longer (factor > 1 is slower): absolute times are scaled and
  re-quantized (no accumulated rounding), TEMPO tokens move to the bin of bpm / factor."""
  if not factor > 0:
    raise ValueError(f"stretch_tempo: factor must be > 0, got {factor}")
  v = vocab
  tokens = np.asarray(tokens, dtype=np.int32).reshape(-1)
  is_shift = (tokens >= v.time_shift_offset) & (tokens < v.velocity_offset)
  times = np.cumsum(np.where(is_shift, tokens - v.time_shift_offset + 1, 0))
  out, now = [], 0
  for t, time in zip(tokens[~is_shift].tolist(), times[~is_shift].tolist()):
    target = int(math.floor(time * factor + 0.5))
    out.extend(_shift_tokens(target - now, v))
    now = target
    if v.tempo_offset <= t < v.instrument_offset:
      t = v.tempo_offset + v.tempo_bin(v.bin_tempo(t - v.tempo_offset) / factor)
    out.append(t)
  end = int(math.floor((times[-1] if len(times) else 0) * factor + 0.5))
  out.extend(_shift_tokens(end - now, v))
  return np.asarray(out, dtype=np.int32)


def jitter_velocity(
  tokens, rng: np.random.Generator, max_bins: int = 1, vocab: Vocab = DEFAULT
) -> np.ndarray:
  """Move each VELOCITY token by a uniform integer in [-max_bins, max_bins] bins
  (clipped to the valid bins)."""
  v = vocab
  tokens = np.array(tokens, dtype=np.int32).reshape(-1)
  is_vel = (tokens >= v.velocity_offset) & (tokens < v.sustain_offset)
  delta = rng.integers(-max_bins, max_bins + 1, size=int(is_vel.sum()))
  bins = np.clip(tokens[is_vel] - v.velocity_offset + delta, 0, v.n_velocity - 1)
  tokens[is_vel] = v.velocity_offset + bins
  return tokens
