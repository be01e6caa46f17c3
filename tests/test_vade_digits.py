"""experiments/vade_digits.py runs end to end with the library's t-SNE start (tiny network)."""

import os
import sys

import numpy as np

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "experiments"))
import vade_digits  # noqa: E402


def test_the_digits_check_runs_with_the_tsne_start(capsys, monkeypatch):
  x, y = vade_digits.load()
  monkeypatch.setattr(vade_digits, "load", lambda: (x[:400], y[:400]))  # t-SNE of 1797: seconds
  calls = []
  tsne = vade_digits.vade_variant.tsne_clusters
  monkeypatch.setattr(
    vade_digits.vade_variant, "tsne_clusters", lambda *a: calls.append(a[0].shape) or tsne(*a)
  )
  results = vade_digits.main(
    "--pretrain-epochs 1 --epochs 1 --hidden 32 --latent-dim 4 --start tsne_inputs "
    "--log-every 0".split()
  )
  for name in ("kmeans_pixels", "ae_gmm", "vade"):
    assert 0.1 <= results[name]["acc"] <= 1.0 and 0.0 <= results[name]["nmi"] <= 1.0
  # The library's start ran on the pixels (the 400 images), and the script reports its own
  # clusters; VaDE's assignments at the start come from their moments.
  assert calls[0] == (400, 64)
  assert len(np.unique(results["ae_gmm"]["assignments"])) >= 5
  assert "VaDE (1 joint epochs)" in capsys.readouterr().out
