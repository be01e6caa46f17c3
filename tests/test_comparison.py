"""experiments/train_all.py's table and chart from eval results (no training here)."""

import json
import os
import sys

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "experiments"))
import train_all  # noqa: E402


def _metrics(lsd, frechet, nmi):
  sq = {"frechet": frechet, "mmd2": 0.1, "n": 256, "n_reference": 24}
  return {
    "likelihood": {"available": True, "nll_nats": 3500.0, "nll_bits_per_dim": 1.8},
    "latent_usage": {"active_units": 5, "latent_dim": 8},
    "reconstruction": {"lsd_db": lsd, "spectral_convergence": 0.5},
    "sample_quality": {
      "available": True,
      "embedding": "bands16 (...)",
      "prior": sq,
      "prior_gmm": dict(sq, frechet=frechet / 2),
      "reconstructions": dict(sq, frechet=frechet / 4),
    },
    "genre": {"nmi": nmi, "ari": nmi, "linear_probe": {"acc": 0.75}},
    "baseline_pca_kmeans": {"genre": {"nmi": 0.5, "ari": 0.4, "linear_probe": {"acc": 0.625}}},
  }


def test_table_reports_the_comparable_measures_and_says_what_compares(tmp_path):
  rows = []
  for name, lsd, fd, nmi in (("basic", 12.0, 900.0, 0.6), ("conv", 10.0, 700.0, 0.9)):
    m = _metrics(lsd, fd, nmi)
    row = {"model": name, "parameters": 10, "best_val": 1.0, "_history": [], "_baseline": {}}
    row |= train_all.measures(m)
    row |= train_all.label_scores("genre", m["genre"])
    rows.append(row)
  rows[0]["_baseline"] = _metrics(0, 0, 0)["baseline_pca_kmeans"]
  # A latent's parts, each clustered alone, are rows under their model's.
  part = {"dims": [0, 6], "cluster_space": {"dims": 6}, "genre": {"nmi": 0.42, "ari": 0.31}}
  rows[1]["_parts"] = train_all.part_scores({"latent_parts": {"audio": part}})
  rows[1]["coherence_genre"] = 0.5
  rows.append({"model": "multimodal", "skipped": "no lyrics model"})
  lines = train_all.write_table(rows, str(tmp_path))
  header = lines[0]
  for col in ("lsd_db", "frechet_prior", "frechet_gmm", "frechet_recon", "nll_nats", "nmi_genre"):
    assert col in header
  conv = next(line for line in lines if line.startswith("| conv"))
  assert "| 10 |" in conv and "| 700 |" in conv and "| 350 |" in conv and "5/8" in conv
  text = (tmp_path / "comparison.md").read_text()
  assert "does not compare" in text and "bands16" in text and "skipped multimodal" in text
  assert "pca_kmeans_baseline" in text and "probe_genre" in header
  baseline = next(line for line in lines if line.startswith("| pca_kmeans_baseline"))
  assert "| 0.625 |" in baseline and "| 0.75 |" in conv
  assert "coherence_genre" in header and "| 0.5 |" in conv and "from the audio alone" in text
  part = lines[lines.index(conv) + 1]
  assert part.startswith("| conv (audio part) |") and "| 0.42 | 0.31 |" in part
  # Models with other features (another dB reference) have their own baseline, named.
  rows[1]["_baseline"] = {"genre": {"nmi": 0.3, "ari": 0.2}}
  names = [line.split(" | ")[0] for line in train_all.write_table(rows, str(tmp_path))]
  assert "| pca_kmeans_baseline (basic)" in names and "| pca_kmeans_baseline (conv)" in names
  train_all.plot_measures(rows, str(tmp_path))
  assert (tmp_path / "comparison.png").stat().st_size > 1000


def test_param_count_builds_without_data():
  from jaxvae.variants import registry

  config = registry.load_config(
    os.path.join(ROOT, "configs", "conv_vae.py:small"), {"model.latent_dim": "8"}
  )
  assert train_all._param_count(config) > 1000


def test_rows_have_every_measure():
  """Every column of MEASURES comes out of `measures` (the keys it reads are the ones
  --mode=eval writes: tests/test_train.py checks those on a real run)."""
  row = train_all.measures(_metrics(1.0, 2.0, 0.5))
  assert set(train_all.MEASURES) <= set(row)
  json.dumps(row)


def test_several_seeds_are_summarized_by_median_and_worst(tmp_path):
  """`--seeds`: each score's median and worst over the seeds, the baseline's too, and the
  steps and stopping reasons of the runs."""
  per_seed = {}
  for seed, (nmi, steps, why) in enumerate(((0.2, 900, "patience"), (0.6, 2000, "max_steps"))):
    m = _metrics(10.0, 500.0, nmi)
    row = {"model": "conv", "steps": steps, "stopped": why, "_history": []}
    own = {"own": {"nmi": nmi + 0.1}}  # a mixture prior's own clusters
    row |= train_all.label_scores("genre", m["genre"] | {"gmm": {"nmi": nmi / 2}} | own)
    row["_baseline"] = m["baseline_pca_kmeans"]
    per_seed[seed] = [row, {"model": "vade", "skipped": "no data"}]
  per_seed[2] = [dict(per_seed[1][0], nmi_genre=0.5)]
  lines = train_all.summarize_seeds(per_seed, str(tmp_path))
  conv = next(line for line in lines if line.startswith("| conv"))
  assert "| 3 | 900-2000 | 1 patience, 2 max_steps |" in conv
  assert "| 0.500 / 0.200 |" in conv  # nmi_genre: median 0.5, worst 0.2
  assert "| 0.300 / 0.100 |" in conv  # the GMM's NMI
  assert "| 0.700 / 0.300 |" in conv  # its own clusters' NMI (seed 2 copies seed 1's)
  baseline = next(line for line in lines if line.startswith("| pca_kmeans_baseline"))
  assert "| 0.500 / 0.500 |" in baseline
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["seeds"] == [0, 1, 2] and summary["models"]["conv"]["nmi_genre"] == [0.2, 0.6, 0.5]
  # The targets line: conv's median NMI 0.5 equals the baseline's, its ARI 0.5 is above 0.4.
  target = next(line for line in lines if line.startswith("\ngenre,"))
  assert "own features: at or above: conv; below (NMI / ARI): none." in target
  assert "strongest baseline, pca_kmeans_baseline (NMI 0.500, ARI 0.400" in target
  assert "Best: conv 0.500 (+0.000 over the strongest)" in target
  per_seed[2] = [dict(per_seed[1][0], nmi_genre=0.1, ari_genre=0.1)]
  lines = train_all.summarize_seeds(per_seed, str(tmp_path))
  target = next(line for line in lines if line.startswith("\ngenre,"))
  assert "own features: at or above: none; below (NMI / ARI): conv (0.200 / 0.200)" in target
