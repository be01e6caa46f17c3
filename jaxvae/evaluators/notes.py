"""Reconstructions of the MIDI VAE (stages 2-3) at the note level: each validation window is
encoded to its posterior mean, decoded greedily from its own first token, and the decoded
notes are matched against the window's with mir_eval's transcription metrics (the field's
standard): precision, recall and F1 of notes matched by onset (within 50 ms) and pitch
(within 50 cents), and the same with offsets (within 20 % of the note or 50 ms). Teacher-forced
token accuracy is the validation metric `accuracy` beside it."""

from __future__ import annotations

import jax
import numpy as np

from jaxvae.sampling import tokens as tokens_lib


def notes_of(window: np.ndarray, tokenizer) -> tuple[np.ndarray, np.ndarray]:
  """(intervals [N, 2] in seconds, pitches [N] in Hz) of a token row's non-drum notes with a
  positive duration, decoded by `tokenizer`."""
  return piece_notes(tokenizer.decode(window))


def piece_notes(pm) -> tuple[np.ndarray, np.ndarray]:
  """(intervals [N, 2] in seconds, pitches [N] in Hz) of a piece's non-drum notes with a
  positive duration."""
  notes = [n for inst in pm.instruments if not inst.is_drum for n in inst.notes if n.end > n.start]
  if not notes:
    return np.zeros((0, 2)), np.zeros((0,))
  intervals = np.array([[n.start, n.end] for n in notes], np.float64)
  pitches = 440.0 * 2.0 ** ((np.array([n.pitch for n in notes], np.float64) - 69.0) / 12.0)
  return intervals, pitches


def note_scores(reference: np.ndarray, estimate: np.ndarray, tokenizer) -> dict[str, float] | None:
  """mir_eval's onset-only and onset+offset P/R/F1 of two token rows; None when the
  reference has no notes."""
  ref_i, ref_p = notes_of(reference, tokenizer)
  if not len(ref_p):
    return None
  return interval_scores(ref_i, ref_p, *notes_of(estimate, tokenizer))


def interval_scores(ref_i, ref_p, est_i, est_p) -> dict[str, float]:
  """mir_eval's onset-only and onset+offset P/R/F1 of (intervals, pitches in Hz) pairs."""
  from mir_eval import transcription

  if not len(est_p):
    return {
      k: 0.0
      for k in ("precision", "recall", "f1", "precision_offset", "recall_offset", "f1_offset")
    }
  p, r, f, _ = transcription.precision_recall_f1_overlap(
    ref_i, ref_p, est_i, est_p, offset_ratio=None
  )
  po, ro, fo, _ = transcription.precision_recall_f1_overlap(ref_i, ref_p, est_i, est_p)
  return {
    "precision": p,
    "recall": r,
    "f1": f,
    "precision_offset": po,
    "recall_offset": ro,
    "f1_offset": fo,
  }


def reconstruct(job, state, windows: np.ndarray) -> np.ndarray:
  """Greedy decodings `[N, seq_len]` of token windows from their posterior means, each
  started from its own first token."""
  variables = {"params": state.params}
  mu = np.asarray(tokens_lib.encode(job.model, variables, windows))
  out = tokens_lib.generate(
    job.model,
    variables,
    jax.random.PRNGKey(job.config.seed),
    num_tokens=windows.shape[1] - 1,
    batch_size=len(windows),
    temperature=0.0,
    z=mu,
    prompt=windows[:, :1],
  )
  return np.asarray(out)


def evaluate(job, state, windows: np.ndarray, limit: int) -> dict:
  """Mean note-level scores over up to `limit` validation windows that hold notes, with the
  conditions."""
  windows = np.asarray(windows[:limit], np.int32)
  decoded = reconstruct(job, state, windows)
  tok = job.spec.tokenizer
  rows = [s for s in (note_scores(w, d, tok) for w, d in zip(windows, decoded)) if s is not None]
  out = {
    "windows": len(rows),
    "decoding": "greedy from the posterior mean, first token given",
    "matching": "mir_eval.transcription: onset 50 ms, pitch 50 cents; _offset adds offsets",
  }
  for key in ("precision", "recall", "f1", "precision_offset", "recall_offset", "f1_offset"):
    out[key] = float(np.mean([r[key] for r in rows])) if rows else None
  return out
