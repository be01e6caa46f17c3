"""The trained model against the untrained one (same init seed) on the validation split, as
the original puzzle VQ-VAE reported it: reconstruction MSE, and for VQ models perplexity and codes
used."""

from __future__ import annotations

from jaxvae.evaluators.validation import Validation


def _summarize(metrics: dict) -> dict:
  out = {"recon_mse": metrics.get("recon_mse", float("nan"))}
  if "codes_used" in metrics:
    out["perplexity"] = metrics["code_perplexity"]
    out["codes_used"] = metrics["codes_used"]
  return out


class Untrained:
  """`run(state)` -> the trained `state` against the run's initial state (the same init seed)
  on the validation split; `summary(result)` is the Markdown table."""

  def __init__(self, job):
    self.job = job

  def run(self, state) -> dict:
    return compare(self.job, state)

  def summary(self, result: dict) -> str:
    return markdown(result)


def compare(job, trained_state) -> dict:
  untrained = _summarize(Validation(job).run(job.state))
  trained = _summarize(Validation(job).run(trained_state))
  before, after = untrained["recon_mse"], trained["recon_mse"]
  result = {
    "recon_mse_untrained": before,
    "recon_mse_trained": after,
    "recon_reduction_pct": 100.0 * (before - after) / before if before else 0.0,
    "validation_examples": len(job.val_examples),
    "step": int(trained_state.step),
  }
  if "codes_used" in trained:
    result |= {
      "perplexity": trained["perplexity"],
      "perplexity_untrained": untrained["perplexity"],
      "codes_used": trained["codes_used"],
      "codes_used_untrained": untrained["codes_used"],
      "codebook_size": int(job.config.model.num_codes),
    }
  return result


def markdown(result: dict) -> str:
  rows = [
    (
      "Recon MSE",
      result["recon_mse_trained"],
      result["recon_mse_untrained"],
      f"{result['recon_reduction_pct']:.1f}% reduction",
    )
  ]
  if "codes_used" in result:
    rows.append(
      (
        "Perplexity",
        result["perplexity"],
        result["perplexity_untrained"],
        f"{result['perplexity'] - result['perplexity_untrained']:+.2f}",
      )
    )
    n = result["codebook_size"]
    rows.append(
      (
        "Codes used",
        f"{result['codes_used']}/{n}",
        f"{result['codes_used_untrained']}/{n}",
        f"{result['codes_used'] - result['codes_used_untrained']:+d} codes",
      )
    )
  lines = ["| Metric | Trained | Untrained | Improvement |", "|---|---|---|---|"]
  for name, a, b, c in rows:
    fa = f"{a:.5f}" if isinstance(a, float) else a
    fb = f"{b:.5f}" if isinstance(b, float) else b
    lines.append(f"| {name} | {fa} | {fb} | {c} |")
  return "\n".join(lines) + "\n"
