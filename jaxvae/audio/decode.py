"""One audio file -> mono float32 waveform at a fixed rate; fixed-length examples; bad-file checks.

Decoding goes through libsndfile (`soundfile`: wav, flac, ogg/opus, mp3 with libsndfile >= 1.1)
and falls back to `audioread` (ffmpeg, gstreamer, ...) for what libsndfile cannot read.
Resampling uses `librosa.resample` (soxr), so waveforms match what `librosa.load` would give.

A bad file never stops a run: it raises `AudioError` with a short `reason` code
(`REASONS`), and `load_examples` turns that into silence or a skip as configured, returning
the reason so the caller can count it.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence
import dataclasses
import os
import sys
from typing import Any

import numpy as np
import soundfile as sf
from tqdm import tqdm

from jaxvae.errors import AudioError

# Peak amplitude below which a clip counts as silent (-100 dBFS): digital silence and dither.
SILENCE_PEAK = 1e-5

REASONS = ("missing", "unreadable", "empty", "non_finite", "too_short", "silent")
MODES = ("pad_crop", "segment")
ON_ERROR = ("silence", "skip", "raise")


def load_audio(path: str, sr: int, *, mono: bool = True, min_seconds: float = 0.0) -> np.ndarray:
  """Decodes `path`, checks it, downmixes and resamples to `sr`.

  Returns:
    float32 array `[samples]` (mono) or `[channels, samples]` (mono=False).

  Raises:
    AudioError: the file is missing, unreadable, empty, has NaN/inf samples, is shorter
      than `min_seconds`, or is silent.
  """
  y, native_sr = decode(path)  # [channels, samples]
  # Checked at the native rate: resampling would smear a NaN over its neighbours.
  reason = check_audio(y, native_sr, min_seconds=min_seconds)
  if reason:
    raise AudioError(reason, path, _describe(y, native_sr))
  if mono:
    y = y.mean(axis=0)
  return np.ascontiguousarray(resample(y, native_sr, sr), dtype=np.float32)


def resample(y: np.ndarray, sr: int, target_sr: int) -> np.ndarray:
  """`y` (`[..., samples]`) from rate `sr` to `target_sr`, as `librosa.load` would."""
  if sr == target_sr:
    return y
  import librosa  # slow import; only paid when a waveform actually needs resampling.

  return librosa.resample(y, orig_sr=sr, target_sr=target_sr)


def decode(path: str) -> tuple[np.ndarray, int]:
  """Reads a file at its own rate as float32 `[channels, samples]`, or raises AudioError."""
  if not os.path.isfile(path):
    raise AudioError(*_not_a_file(path))
  if os.path.getsize(path) == 0:
    raise AudioError("empty", path, "0 bytes")
  try:
    data, sr = sf.read(path, dtype="float32", always_2d=True)
    return np.ascontiguousarray(data.T), int(sr)
  except Exception as sf_error:  # noqa: BLE001 - any decoder failure means "try the next one".
    try:
      return _decode_audioread(path)
    except Exception as ar_error:  # noqa: BLE001
      raise AudioError(
        "unreadable",
        path,
        f"soundfile: {sf_error}; audioread: {type(ar_error).__name__}: {ar_error}",
      ) from ar_error


def _not_a_file(path: str) -> tuple[str, str, str]:
  """(reason, path, detail) for a path that is not a readable regular file."""
  if os.path.isdir(path):
    return "unreadable", path, "a directory, not a file"
  if os.path.islink(path):
    return "missing", path, f"a broken symbolic link to {os.readlink(path)!r}"
  return "missing", path, "no such file"


def _decode_audioread(path: str) -> tuple[np.ndarray, int]:
  """audioread yields 16-bit little-endian PCM buffers, interleaved by channel."""
  import audioread  # optional; only needed for formats libsndfile does not know.

  with audioread.audio_open(path) as f:
    channels, sr = int(f.channels), int(f.samplerate)
    pcm = b"".join(f)
  data = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
  return np.ascontiguousarray(data.reshape(-1, channels).T), sr


def check_audio(y: np.ndarray, sr: int, *, min_seconds: float = 0.0) -> str | None:
  """Returns the reason a waveform (`[..., samples]`) is unusable, or None if it is fine."""
  y = np.asarray(y)
  finite = bool(np.isfinite(y).all())
  peak = float(np.max(np.abs(y))) if (y.size and finite) else 0.0
  return _reason(y.shape[-1] if y.ndim else 0, sr, peak, finite, min_seconds)


def _reason(frames: int, sr: int, peak: float, finite: bool, min_seconds: float) -> str | None:
  """The order matters: an empty file is not also 'too short', a NaN file not also 'silent'."""
  if frames == 0:
    return "empty"
  if not finite:
    return "non_finite"
  if frames < min_seconds * sr:
    return "too_short"
  if peak < SILENCE_PEAK:
    return "silent"
  return None


def _describe(y: np.ndarray, sr: int) -> str:
  return f"{y.shape[-1]} samples at {sr} Hz"


# ----------------------------------------------------------------------------------------------
# Fixed-length examples
# ----------------------------------------------------------------------------------------------


def fix_length(y: np.ndarray, n_samples: int) -> np.ndarray:
  """Crops (keeping the start) or zero-pads (at the end) the last axis to `n_samples`."""
  y = np.asarray(y)
  n = y.shape[-1]
  if n >= n_samples:
    return y[..., :n_samples]
  pad = [(0, 0)] * (y.ndim - 1) + [(0, n_samples - n)]
  return np.pad(y, pad)


def segment(
  y: np.ndarray, n_samples: int, hop_samples: int, *, min_fraction: float = 0.5
) -> list[np.ndarray]:
  """Cuts `y` into windows of `n_samples` every `hop_samples`.

  The first window that runs past the end is zero-padded and kept when at least
  `min_fraction` of it is real audio and it holds audio no full window covers (with
  overlapping windows it may not); later ones would only repeat its tail.
  A clip shorter than `min_fraction * n_samples` gives an empty list.
  """
  if n_samples <= 0 or hop_samples <= 0:
    raise ValueError(
      f"segment needs n_samples > 0 and hop_samples > 0, got {n_samples} and {hop_samples}"
    )
  y = np.asarray(y)
  n = y.shape[-1]
  out, start = [], 0
  while start + n_samples <= n:
    out.append(y[..., start : start + n_samples].copy())
    start += hop_samples
  rest = n - start
  covered = start - hop_samples + n_samples if out else 0
  if rest > 0 and rest >= min_fraction * n_samples and covered < n:
    out.append(fix_length(y[..., start:], n_samples))
  return out


def load_examples(
  item: Any,
  *,
  sr: int,
  mode: str,
  seconds: float,
  hop_seconds: float | None = None,
  on_error: str = "silence",
  min_seconds: float = 0.0,
) -> tuple[list[np.ndarray], str | None]:
  """Loads one item (an `Item` or a path) as fixed-length mono examples.

  Args:
    item: anything with a `.path`, or a path string.
    sr: target sample rate.
    mode: 'pad_crop' (one example of `seconds`) or 'segment' (windows of `seconds`).
    seconds: example length.
    hop_seconds: window step for 'segment'; None or <= 0 means `seconds` (no overlap).
    on_error: what a bad file gives: 'silence' (one example of zeros), 'skip' (no
      examples) or 'raise' (the AudioError propagates).
    min_seconds: files shorter than this are bad ('too_short').

  Returns:
    (examples, reason): float32 arrays of `round(seconds * sr)` samples, and None or the
    reason the file was bad (so the caller can count it).
  """
  if mode not in MODES:
    raise ValueError(f"mode is {mode!r}; expected one of {', '.join(MODES)}")
  if on_error not in ON_ERROR:
    raise ValueError(f"on_error is {on_error!r}; expected one of {', '.join(ON_ERROR)}")
  path = getattr(item, "path", item)
  n = int(round(seconds * sr))
  try:
    y = load_audio(path, sr, min_seconds=min_seconds)
    if mode == "pad_crop":
      return [fix_length(y, n)], None
    hop = int(round(hop_seconds * sr)) if hop_seconds and hop_seconds > 0 else n
    segments = segment(y, n, hop)
    if not segments:
      raise AudioError("too_short", path, f"{y.shape[-1]} samples < half a {n}-sample segment")
    return segments, None
  except AudioError as e:
    if on_error == "raise":
      raise
    if on_error == "skip":
      return [], e.reason
    return [np.zeros(n, np.float32)], e.reason


# ----------------------------------------------------------------------------------------------
# Dataset validation
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Scan:
  frames: int
  sr: int
  peak: float
  finite: bool


def _scan(path: str) -> _Scan:
  """Reads a whole file in blocks: finds corrupt data without holding a long file in memory."""
  if not os.path.isfile(path):
    raise AudioError(*_not_a_file(path))
  try:
    info = sf.info(path)
  except Exception:  # noqa: BLE001 - not a libsndfile format; decode it whole instead.
    y, sr = decode(path)
    finite = bool(np.isfinite(y).all())
    peak = float(np.abs(y).max()) if (y.size and finite) else 0.0
    return _Scan(y.shape[-1], sr, peak, finite)
  frames, peak, finite = 0, 0.0, True
  try:
    for block in sf.blocks(path, blocksize=1 << 16, dtype="float32", always_2d=True):
      frames += block.shape[0]
      if finite and not np.isfinite(block).all():
        finite = False
      if finite and block.size:
        peak = max(peak, float(np.abs(block).max()))
  except Exception as e:  # noqa: BLE001 - a header that parses over data that does not.
    raise AudioError("unreadable", path, str(e)) from e
  return _Scan(frames, int(info.samplerate), peak, finite)


def validate_items(
  items: Sequence[Any], *, sr: int, min_seconds: float = 0.0, progress: bool = True
) -> dict[str, Any]:
  """Decodes every file once and summarizes the dataset (the data validation mode).

  Files are decoded at their own rate (resampling cannot fail in a new way), so this
  finds every file `load_audio` would reject, with the same reasons.

  Returns a JSON-friendly dict:
    num_files, ok, bad: [{path, reason}], resampled (ok files whose rate != sr),
    durations: {min, max, mean, total} seconds over ok files,
    sample_rates: {"22050": count}, labels: {name: {value: count}}, splits: {split: count}
    (labels and splits counted over ok files: what training will see).
  """
  bad: list[dict[str, str]] = []
  durations: list[float] = []
  rates: collections.Counter[str] = collections.Counter()
  labels: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
  splits: collections.Counter[str] = collections.Counter()
  for item in tqdm(items, desc="validate", unit="file", file=sys.stderr, disable=not progress):
    path = getattr(item, "path", item)
    try:
      s = _scan(path)
      reason = _reason(s.frames, s.sr, s.peak, s.finite, min_seconds)
    except AudioError as e:
      reason = e.reason
    if reason:
      bad.append({"path": path, "reason": reason})
      continue
    durations.append(s.frames / s.sr)
    rates[str(s.sr)] += 1
    for name, value in (getattr(item, "labels", None) or {}).items():
      labels[name][value] += 1
    splits[getattr(item, "split", None) or "none"] += 1
  return {
    "num_files": len(items),
    "ok": len(durations),
    "bad": bad,
    "resampled": sum(c for r, c in rates.items() if int(r) != sr),
    "durations": _duration_stats(durations),
    "sample_rates": dict(sorted(rates.items(), key=lambda kv: int(kv[0]))),
    "labels": {k: dict(sorted(v.items())) for k, v in sorted(labels.items())},
    "splits": dict(sorted(splits.items())),
  }


def _duration_stats(durations: list[float]) -> dict[str, float]:
  if not durations:
    return {"min": 0.0, "max": 0.0, "mean": 0.0, "total": 0.0}
  d = np.asarray(durations, np.float64)
  return {
    "min": float(d.min()),
    "max": float(d.max()),
    "mean": float(d.mean()),
    "total": float(d.sum()),
  }


def format_validation_table(report: dict[str, Any], *, max_bad_listed: int = 20) -> str:
  """A plain-text summary of `validate_items`' report, for the terminal and the logs."""
  n, ok, bad = report["num_files"], report["ok"], report["bad"]
  lines = [f"files: {ok} ok of {n} ({len(bad)} skipped)"]
  if bad:
    lines.append("skipped by reason:")
    for reason, count in sorted(collections.Counter(b["reason"] for b in bad).items()):
      lines.append(f"  {reason:<12} {count:>7}")
    for b in bad[:max_bad_listed]:
      lines.append(f"    {b['reason']:<12} {b['path']}")
    if len(bad) > max_bad_listed:
      lines.append(f"    ... and {len(bad) - max_bad_listed} more")
  d = report["durations"]
  lines.append(
    f"durations (s): min {d['min']:.2f}  mean {d['mean']:.2f}  max {d['max']:.2f}  "
    f"total {d['total']:.1f} ({d['total'] / 3600:.2f} h)"
  )
  rates = ", ".join(f"{r} Hz x {c}" for r, c in report["sample_rates"].items()) or "-"
  lines.append(f"sample rates: {rates}")
  if report.get("resampled"):
    lines.append(f"  ({report['resampled']} files will be resampled)")
  if report.get("splits"):
    lines.append("splits: " + ", ".join(f"{k} {v}" for k, v in report["splits"].items()))
  lines.extend(_label_lines(report["labels"]))
  return "\n".join(lines)


def _label_lines(labels: dict[str, dict[str, int]]) -> Iterable[str]:
  if not labels:
    yield "labels: none"
    return
  yield "labels:"
  for name, counts in labels.items():
    yield f"  {name} ({len(counts)} values):"
    width = max(len(v) for v in counts)
    for value, count in counts.items():
      yield f"    {value:<{width}} {count:>7}"
