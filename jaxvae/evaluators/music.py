"""Token models in `--mode=eval`: validation token NLL and perplexity, and the statistics of
`eval.num_generated` generated pieces (`generate.num_tokens` each, from the prior in VAE
stages) against those of the validation windows (`jaxvae.symbolic.stats`), both decoded by the
run's tokenizer (ids a generated piece holds that do not decode are counted). The NLL is also
given per note, which compares across tokenizations. The pieces are written as
`<out_dir>/samples/sample_XX.mid`."""

from __future__ import annotations

import os

import numpy as np

from jaxvae.evaluators import notes
from jaxvae.evaluators.validation import Validation
from jaxvae.sampling import tokens
from jaxvae.symbolic import stats as music_stats
from jaxvae.symbolic.tokenizers import PAD


def data_windows(job) -> np.ndarray:
  """The validation split's token windows, without augmented copies."""
  rows = job.store.manifest["examples"]
  keep = [i for i in job.val_examples.indices if not rows[i].get("augment")]
  return np.asarray(job.store.features[np.asarray(keep, np.int64)])


def per_note(nll_per_token: float, windows: np.ndarray, tokenizer) -> dict[str, float]:
  """NLL in nats per note (comparable across tokenizations, unlike per token): the mean NLL per
  target token times the windows' target tokens per note (targets: every id after the first
  that is not PAD, as the loss counts them; notes: the onsets those ids hold)."""
  targets = np.asarray(windows)[:, 1:]
  n_tokens = int(np.count_nonzero(targets != PAD))
  n_notes = int(tokenizer.onsets_per_id()[targets[targets != PAD]].sum())
  if not n_notes:
    return {"tokens_per_note": None, "nll_per_note": None}
  return {
    "tokens_per_note": n_tokens / n_notes,
    "nll_per_note": float(nll_per_token) * n_tokens / n_notes,
  }


def tensorboard_scalars(music: dict) -> dict[str, float]:
  """The scalar part of `MusicStatistics.run`'s result, named for TensorBoard (`eval/...`)."""
  val = music["val"]
  keys = ("nll", "ppl", "accuracy", "nll_per_note")
  out = {f"eval/val_{k}": val[k] for k in keys if val.get(k) is not None}
  for name in ("generated", "data"):
    out |= {
      f"eval/{name}_{k}": v
      for k, v in music[name].items()
      if k in music_stats.SCALARS and v is not None
    }
  out |= {f"eval/distance_{k}": v for k, v in music["distance"].items() if isinstance(v, float)}
  rec = music.get("reconstruction", {})
  out |= {
    f"eval/recon_note_{k}": rec[k] for k in ("precision", "recall", "f1") if rec.get(k) is not None
  }
  return out


class MusicStatistics:
  """`run(state)` -> {"step", "val", "generated", "data", "distance", "generation", "note"},
  and for stages 2-3 "reconstruction" (`evaluators.notes`) (docs/ARCHITECTURE.md, "Token
  models in eval and generate")."""

  def __init__(self, job, out_dir: str):
    self.job = job
    self.out_dir = out_dir

  def run(self, state) -> dict:
    job, config = self.job, self.job.config
    n = config.eval.num_generated
    val = Validation(job).run(state)
    val["ppl"] = float(np.exp(val["nll"]))  # of the mean NLL, not a mean of per-batch ppl
    tok = job.spec.tokenizer
    data = data_windows(job)
    val |= per_note(val["nll"], data, tok)
    generated = tokens.sample(job, state, config, n, config.seed)
    files = tokens.write_midi(generated, os.path.join(self.out_dir, "samples"), tok)
    pieces, skipped = tokens.decode_all(tok, generated)
    g = config.generate
    extra = {}
    if job.model.cfg.is_vae:  # stages 2-3: reconstructions at the note level
      extra["reconstruction"] = notes.evaluate(
        job, state, data_windows(job), config.eval.num_reconstructed
      ) | {"token_accuracy_teacher_forced": val.get("accuracy")}
    return {
      "step": int(state.step),
      **extra,
      "val": val,
      **music_stats.compare(pieces, tokens.decode_all(tok, data)[0]),
      "generation": {
        "tokenizer": tok.describe(),
        "undecodable_tokens": skipped,
        "num_generated": n,
        "num_tokens": g.num_tokens,
        "latent": "prior" if job.model.cfg.is_vae else "none",
        "temperature": g.temperature,
        "top_k": g.top_k,
        "top_p": g.top_p,
        "seed": config.seed,
        "files": files,
      },
      "note": "pitch-class histograms are duration-weighted; drum notes excluded",
    }

  def scalars(self, results: dict) -> dict[str, float]:
    """The scalars of `results` for TensorBoard, under `eval/`."""
    return tensorboard_scalars(results)

  def summary(self, results: dict) -> str:
    return _summary(results)


def _fmt(v) -> str:
  return "n/a" if v is None else f"{v:.3f}"


def _summary(results: dict) -> str:
  val, gen, data, dist = (results[k] for k in ("val", "generated", "data", "distance"))
  lines = [
    f"val: nll {val['nll']:.4f}  ppl {val['ppl']:.2f}  accuracy {_fmt(val.get('accuracy'))}  "
    f"nll per note {_fmt(val.get('nll_per_note'))}"
  ]
  lines.append(
    f"generated ({gen['pieces']} pieces, {gen['empty']} empty) vs data "
    f"({data['pieces']} validation windows):"
  )
  for k in music_stats.SCALARS:
    lines.append(
      f"  {k:<14} {_fmt(gen[k]):>8} vs {_fmt(data[k]):>8}  overlap {_fmt(dist['overlap_area'][k])}"
    )
  lines.append(
    f"  pitch classes: JS {_fmt(dist['pitch_class_js'])}  L1 {_fmt(dist['pitch_class_l1'])}"
  )
  rec = results.get("reconstruction")
  if rec:
    lines.append(
      f"reconstructions ({rec['windows']} windows): note precision {_fmt(rec['precision'])}  "
      f"recall {_fmt(rec['recall'])}  F1 {_fmt(rec['f1'])}  (with offsets {_fmt(rec['f1_offset'])})"
    )
  return "\n".join(lines)
