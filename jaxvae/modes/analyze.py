"""`--mode=analyze`: the trained model against the untrained one (same init seed) on the
validation split, as seed 004 reported it, plus the code grids ("puzzles") of a few clips.

Writes `DIR/analysis.json`, `DIR/analysis.md` and `DIR/analysis/puzzle_<i>.png`.
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxvae.modes import evaluate as evaluate_lib
from jaxvae.training import loop as train
from jaxvae import workdir as workdir_lib
from jaxvae.data import pipeline


def _summarize(metrics: dict) -> dict:
  out = {"recon_mse": metrics.get("recon_mse", float("nan"))}
  if "codes_used" in metrics:
    out["perplexity"] = metrics["code_perplexity"]
    out["codes_used"] = metrics["codes_used"]
  return out


def compare(run, trained_state) -> dict:
  untrained = _summarize(train.evaluate(run, run.state, run.val_examples))
  trained = _summarize(train.evaluate(run, trained_state, run.val_examples))
  before, after = untrained["recon_mse"], trained["recon_mse"]
  result = {"recon_mse_untrained": before, "recon_mse_trained": after,
            "recon_reduction_pct": 100.0 * (before - after) / before if before else 0.0,
            "validation_examples": len(run.val_examples), "step": int(trained_state.step)}
  if "codes_used" in trained:
    result |= {"perplexity": trained["perplexity"], "perplexity_untrained":
               untrained["perplexity"], "codes_used": trained["codes_used"],
               "codes_used_untrained": untrained["codes_used"],
               "codebook_size": int(run.config.model.num_codes)}
  return result


def markdown(result: dict) -> str:
  rows = [("Recon MSE", result["recon_mse_trained"], result["recon_mse_untrained"],
           f"{result['recon_reduction_pct']:.1f}% reduction")]
  if "codes_used" in result:
    rows.append(("Perplexity", result["perplexity"], result["perplexity_untrained"],
                 f"{result['perplexity'] - result['perplexity_untrained']:+.2f}"))
    n = result["codebook_size"]
    rows.append(("Codes used", f"{result['codes_used']}/{n}",
                 f"{result['codes_used_untrained']}/{n}",
                 f"{result['codes_used'] - result['codes_used_untrained']:+d} codes"))
  lines = ["| Metric | Trained | Untrained | Improvement |", "|---|---|---|---|"]
  for name, a, b, c in rows:
    fa = f"{a:.5f}" if isinstance(a, float) else a
    fb = f"{b:.5f}" if isinstance(b, float) else b
    lines.append(f"| {name} | {fa} | {fb} | {c} |")
  return "\n".join(lines) + "\n"


def plot_puzzle(x: np.ndarray, recon: np.ndarray, codes: np.ndarray, num_codes: int,
                path: str, title: str) -> str:
  """Input spectrogram, its reconstruction and its code grid side by side."""
  fig = Figure(figsize=(11, 3.4), layout="constrained")
  FigureCanvasAgg(fig)
  axes = fig.subplots(1, 3)
  for ax, img, name in ((axes[0], x, "input"), (axes[1], recon, "reconstruction")):
    ax.imshow(img, origin="lower", aspect="auto", cmap="magma", vmin=0.0, vmax=1.0)
    ax.set_title(name)
  im = axes[2].imshow(codes, origin="lower", cmap="tab10" if num_codes <= 10 else "tab20",
                      vmin=-0.5, vmax=num_codes - 0.5)
  axes[2].set_title(f"codes ({codes.shape[0]} x {codes.shape[1]})")
  fig.colorbar(im, ax=axes[2], ticks=range(num_codes))
  fig.suptitle(title)
  fig.savefig(path)
  return path


def run_analyze(config, workdir: str, num_puzzles: int = 4) -> int:
  run = train.setup(config)
  state, _ = evaluate_lib.restore(run, workdir)
  result = compare(run, state)
  os.makedirs(os.path.join(workdir, "analysis"), exist_ok=True)
  batch = next(pipeline.eval_batches(run.val_examples, config.train.batch_size))
  outputs = run.forward(state, run.put(batch))
  if "codes" in outputs:
    codes, recon = np.asarray(outputs["codes"]), np.asarray(outputs["recon"])
    clip_ids = [run.store.manifest["examples"][int(j)]["clip_id"]
                for j in run.val_examples.indices[:num_puzzles]]
    result["puzzles"] = [
        plot_puzzle(batch["x"][i], recon[i], codes[i], int(config.model.num_codes),
                    os.path.join(workdir, "analysis", f"puzzle_{i}.png"), clip_ids[i])
        for i in range(min(num_puzzles, len(clip_ids)))]
  workdir_lib.write_json(os.path.join(workdir, "analysis.json"), result, indent=2)
  table = markdown(result)
  title = f"# {config.model.name}: trained vs untrained (validation split)"
  workdir_lib.write_text(os.path.join(workdir, "analysis.md"), f"{title}\n\n{table}")
  print(table)
  return 0
