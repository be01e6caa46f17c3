"""Statistics of symbolic music, to compare generated pieces with the data (pure numpy).

Per piece (a `pretty_midi.PrettyMIDI` or a token array, decoded with `jaxvae.symbolic.midi.decode`),
over its melodic notes only (a drum pitch is an instrument, not a pitch):

* `pitch_class_histogram`: 12 bins (C = 0), duration-weighted by default (a held note weighs
  more than a short one, as heard); `weight="count"` counts onsets instead. Sums to 1.
* `note_density`: notes per second of the sounding span (first onset to last offset).
* `polyphony`: mean number of notes sounding at once, averaged over the time at least one
  note sounds (rests do not pull it down); `polyphony_max`: the most at any instant. A note
  that ends where another starts does not overlap it.
* `pitch_range`: highest minus lowest pitch, in semitones; `mean_duration`: seconds.

A piece with no melodic note has no statistics (`piece_stats` returns None); sets count such
pieces as `empty`. `distance` compares two sets: Jensen-Shannon divergence (base 2, in [0, 1])
and L1 distance (in [0, 2]) of the mean pitch-class histograms; absolute and relative
differences of the mean scalar statistics; and, per scalar statistic, the overlapping area of
the two sets' distributions (Yang & Lerch 2018, "On the evaluation of generative models in
music"; here estimated with histograms on shared bins over the per-piece values, not with
their kernel density estimate of pairwise distances): 1 for identical distributions, 0 for
disjoint ones.
"""

from __future__ import annotations

import numpy as np

from jaxvae.symbolic import midi

SCALARS = ("note_density", "polyphony", "polyphony_max", "pitch_range", "mean_duration")
OVERLAP_BINS = 20


def _notes(piece) -> np.ndarray:
  """float64 [n, 3] (start, end, pitch) of the melodic notes of a piece or token array."""
  if not hasattr(piece, "instruments"):
    piece = midi.decode(piece)
  rows = [
    (n.start, n.end, n.pitch)
    for inst in piece.instruments
    if not inst.is_drum
    for n in inst.notes
    if n.end > n.start
  ]
  return np.asarray(rows, np.float64).reshape(-1, 3)


def pitch_class_histogram(notes: np.ndarray, weight: str = "duration") -> np.ndarray:
  """[12] normalized histogram of `(start, end, pitch)` rows (zeros when there are none)."""
  if weight not in ("duration", "count"):
    raise ValueError(f"weight must be 'duration' or 'count', got {weight!r}")
  w = notes[:, 1] - notes[:, 0] if weight == "duration" else np.ones(len(notes))
  hist = np.bincount(notes[:, 2].astype(np.int64) % 12, weights=w, minlength=12)
  total = hist.sum()
  return hist / total if total > 0 else hist


def polyphony(notes: np.ndarray) -> tuple[float, int]:
  """(mean over sounding time, max) of the number of notes sounding at once."""
  times = np.concatenate([notes[:, 0], notes[:, 1]])
  deltas = np.concatenate([np.ones(len(notes)), -np.ones(len(notes))])
  order = np.lexsort((deltas, times))  # at equal times, offsets (-1) before onsets
  times, count = times[order], np.cumsum(deltas[order])
  dt = np.diff(times)
  sounding = count[:-1] > 0
  span = dt[sounding].sum()
  mean = float((count[:-1] * dt)[sounding].sum() / span) if span > 0 else 0.0
  return mean, int(count.max()) if len(count) else 0


def piece_stats(piece, weight: str = "duration") -> dict | None:
  """The statistics of one piece (see the module doc); None when it has no melodic note."""
  notes = _notes(piece)
  if not len(notes):
    return None
  span = notes[:, 1].max() - notes[:, 0].min()
  mean_poly, max_poly = polyphony(notes)
  return {
    "pitch_class_histogram": pitch_class_histogram(notes, weight),
    "note_density": float(len(notes) / span),
    "polyphony": mean_poly,
    "polyphony_max": float(max_poly),
    "pitch_range": float(notes[:, 2].max() - notes[:, 2].min()),
    "mean_duration": float(np.mean(notes[:, 1] - notes[:, 0])),
    "notes": len(notes),
  }


def set_features(pieces, weight: str = "duration") -> dict:
  """Per-piece statistics of a set as arrays over its non-empty pieces, plus counts."""
  stats = [piece_stats(p, weight) for p in pieces]
  kept = [s for s in stats if s is not None]
  out = {
    "pieces": len(stats),
    "empty": len(stats) - len(kept),
    "pitch_class_histogram": np.array(
      [s["pitch_class_histogram"] for s in kept], np.float64
    ).reshape(-1, 12),
  }
  for name in SCALARS + ("notes",):
    out[name] = np.array([s[name] for s in kept], np.float64)
  return out


def summarize(features: dict) -> dict:
  """JSON-ready means of a set (None where the set has no non-empty piece)."""
  n = len(features["note_density"])
  out = {
    "pieces": features["pieces"],
    "empty": features["empty"],
    "notes": int(features["notes"].sum()),
    "pitch_class_histogram": features["pitch_class_histogram"].mean(0).tolist() if n else None,
  }
  for name in SCALARS:
    out[name] = float(features[name].mean()) if n else None
  return out


def js_divergence(p, q) -> float:
  """Jensen-Shannon divergence in bits (0 for equal distributions, 1 for disjoint ones)."""
  p = np.asarray(p, np.float64) / np.sum(p)
  q = np.asarray(q, np.float64) / np.sum(q)
  m = 0.5 * (p + q)

  def kl(a):
    nz = a > 0
    return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

  return max(0.5 * kl(p) + 0.5 * kl(q), 0.0)


def overlap_area(a, b, bins: int = OVERLAP_BINS) -> float:
  """Shared area of the two samples' normalized histograms on common bins, in [0, 1]."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
  if hi <= lo:  # every value equal
    return 1.0
  edges = np.linspace(lo, hi, bins + 1)
  pa = np.histogram(a, edges)[0] / len(a)
  pb = np.histogram(b, edges)[0] / len(b)
  return float(np.minimum(pa, pb).sum())


def distance(a: dict, b: dict) -> dict:
  """How far set `a` is from set `b` (both from `set_features`); None where undefined."""
  if not len(a["note_density"]) or not len(b["note_density"]):
    return {
      "pitch_class_js": None,
      "pitch_class_l1": None,
      **{f"{k}_{d}": None for k in SCALARS for d in ("abs", "rel")},
      "overlap_area": {k: None for k in SCALARS},
    }
  pa = a["pitch_class_histogram"].mean(0)
  pb = b["pitch_class_histogram"].mean(0)
  out = {"pitch_class_js": js_divergence(pa, pb), "pitch_class_l1": float(np.abs(pa - pb).sum())}
  for name in SCALARS:
    ma, mb = float(a[name].mean()), float(b[name].mean())
    out[f"{name}_abs"] = abs(ma - mb)
    out[f"{name}_rel"] = abs(ma - mb) / abs(mb) if mb else None
  out["overlap_area"] = {name: overlap_area(a[name], b[name]) for name in SCALARS}
  return out


def compare(generated, data, weight: str = "duration") -> dict:
  """{'generated', 'data': summaries, 'distance': distance(generated, data)} of two sets of
  pieces (PrettyMIDI objects or token arrays)."""
  fg, fd = set_features(generated, weight), set_features(data, weight)
  return {"generated": summarize(fg), "data": summarize(fd), "distance": distance(fg, fd)}
