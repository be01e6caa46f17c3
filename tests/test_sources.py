"""Several datasets in one run (`data.sources`): the built-in demo corpus plus a folder of
the user's, featurized into one store with per-source counts, bad files, labels and splits;
weighted sampling; per-source validation metrics; --mode=validate over every source."""

from __future__ import annotations

import collections
import json
import os

import numpy as np
import pytest
import soundfile as sf
from test_train import _cli

from conftest import load_config
from jaxvae import errors
from jaxvae.data import dataset
from jaxvae.data import pipeline
from jaxvae.data import sources

SR = 22050


@pytest.fixture(scope="module")
def mine(tmp_path_factory):
  """A folder dataset: label folders 'drone' and 'rock' with 4 tones each, and one text file
  named like audio (a bad file that must be counted, not dropped)."""
  root = tmp_path_factory.mktemp("mine")
  t = np.arange(SR) / SR
  for k, label in enumerate(("drone", "rock")):
    os.makedirs(root / label)
    for j in range(4):
      y = 0.3 * np.sin(2 * np.pi * (110 * (k + 1) + 30 * j) * t)
      sf.write(root / label / f"{label}{j}.wav", y.astype(np.float32), SR)
  (root / "rock" / "broken.wav").write_text("not audio")
  return str(root)


def _sources(mine, weights=(None, None)):
  demo = dict(name="demo", layout="demo")
  folder = dict(name="mine", layout="folder", root=mine, label_prefix="mine:")
  for source, w in zip((demo, folder), weights):
    if w is not None:
      source["weight"] = w
  return repr((demo, folder))


@pytest.fixture(scope="module")
def combined(tiny_overrides, mine):
  return dict(tiny_overrides, **{"data.sources": _sources(mine, (1.0, 3.0))})


def test_one_store_counts_every_source(tmp_path, combined):
  assert _cli(tmp_path, combined, mode="preprocess") == 0
  info = json.load(open(tmp_path / "preprocess.json"))
  sources = info["sources"]
  assert list(sources) == ["demo", "mine"]
  assert sources["demo"]["files"] == 24 and sources["demo"]["bad"] == 0
  assert sources["mine"]["files"] == 9 and sources["mine"]["bad"] == 1
  assert sources["mine"]["bad_reasons"] == "unreadable: 1"
  assert sources["mine"]["examples"] == 9  # the bad file is an example of silence, counted
  assert sum(sources["mine"]["splits"].values()) == 9
  assert sources["mine"]["label_values"] == {
    "label": ["mine:drone", "mine:rock"],
    "source": ["mine"],
  }
  assert info["label_values"]["source"] == ["demo", "mine"]
  assert set(info["label_values"]) == {"genre", "language", "label", "source"}
  assert [b["source"] for b in info["bad"]] == ["mine"]
  store = dataset.open_store(load_config("conv_vae.py:small", combined))
  ids = [e["clip_id"] for e in store.manifest["examples"]]
  assert (
    sum(i.startswith("mine/rock/") for i in ids) == 5
    and sum(i.startswith("demo/") for i in ids) == 24
  )


def test_weights_set_each_sources_share_of_an_epoch(combined, mine, tiny_overrides):
  config = load_config("conv_vae.py:small", combined)
  data = dataset.load(config, progress=False)
  src = data.store.source_array()
  it = pipeline.train_iterator(data.train, 8, 0, config)
  seen = collections.Counter()
  for _ in range(40):
    batch = next(it)
    seen.update(batch["label_source"].tolist())
  names = data.store.label_values["source"]
  share = seen[names.index("mine")] / sum(seen.values())
  assert share == pytest.approx(0.75, abs=0.02)  # weights 1 : 3
  mine_train = int(np.sum(src[data.train.indices] == 1))
  assert mine_train < 0.75 * 8 * 40  # so the small source was repeated, reshuffled
  # Without weights an epoch is every training example once: shares follow the sizes.
  plain = load_config("conv_vae.py:small", tiny_overrides, **{"data.sources": _sources(mine)})
  data = dataset.load(plain, progress=False)
  it = pipeline.train_iterator(data.train, 1, 0, plain)
  ids = [int(next(it)["label_source"][0]) for _ in range(len(data.train))]
  labels = data.store.label_array("source")[data.train.indices]
  assert sorted(ids) == sorted(labels.tolist())


def test_training_reports_validation_per_source(tmp_path, combined):
  overrides = dict(combined, **{"train.epochs": "1", "train.image_every_epochs": "0"})
  assert _cli(tmp_path, overrides) == 0
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  epoch = [r for r in rows if r.get("kind") == "epoch"][-1]
  for name in ("demo", "mine"):
    assert np.isfinite(epoch[f"val/{name}/loss"])
  # The overall loss is the example-weighted mean of the sources' losses.
  config = load_config("conv_vae.py:small", combined)
  val = dataset.load(config, progress=False).validation
  n = {name: len(val.of_source(name)) for name in ("demo", "mine")}
  mean = sum(epoch[f"val/{k}/loss"] * v for k, v in n.items()) / sum(n.values())
  assert epoch["val/loss"] == pytest.approx(mean, rel=1e-4)
  run = json.load(open(tmp_path / "jaxvae_run.json"))
  assert set(run["data"]["sources"]) == {"demo", "mine"}


def test_validate_covers_every_source(tmp_path, combined, capsys):
  assert _cli(tmp_path, combined, mode="validate") == 0
  report = json.load(open(tmp_path / "validate.json"))
  assert report["sources"]["mine"] == {
    "layout": "folder",
    "root": combined["data.sources"].split("'root': '")[1].split("'")[0],
    "files": 9,
    "ok": 8,
    "bad_reasons": "unreadable: 1",
  }
  assert report["sources"]["demo"]["ok"] == 24
  assert "source mine (folder," in capsys.readouterr().out


@pytest.mark.parametrize(
  "sources, more, message",
  [
    ("({'layout': 'gtzan'},)", {}, r"data.sources\[0\].root"),
    (
      "({'layout': 'demo', 'weight': 1.0}, {'layout': 'folder', 'root': '/x', 'name': 'b'})",
      {},
      "give every source a weight",
    ),
    ("({'layout': 'demo', 'colour': 1},)", {}, "unknown key"),
    ("({'layout': 'demo'}, {'layout': 'demo'})", {}, "name of an earlier source"),
    ("({'layout': 'demo'},)", {"data.root": "/x"}, "both set"),
    ("({'layout': 'demo'},)", {"data.kind": "midi"}, "data.kind 'audio'"),
  ],
)
def test_bad_sources_name_the_key(sources, more, message, tiny_overrides):
  with pytest.raises(errors.ConfigError, match=message):
    load_config("conv_vae.py:small", tiny_overrides, **{"data.sources": sources, **more})


def test_a_missing_source_root_names_the_source(tmp_path, tiny_overrides, capsys):
  sources = "({'layout': 'demo'}, {'name': 'x', 'layout': 'folder', 'root': '/no/such'})"
  overrides = dict(tiny_overrides, **{"data.sources": sources})
  assert _cli(tmp_path, overrides, mode="preprocess") == 1
  err = capsys.readouterr().err
  assert "error: data.sources[1] ('x'): data.root '/no/such' does not exist" in err


def test_the_readme_sources_override_loads(tiny_overrides):
  text = open(os.path.join(os.path.dirname(__file__), "..", "docs", "DATA.md")).read()
  value = text.split('--config.data.sources="', 1)[1].split('"', 1)[0]
  config = load_config("conv_vae.py:small", tiny_overrides, **{"data.sources": value})
  got = sources.of_config(config)
  assert [(s.name, s.weight, s.label_prefix) for s in got] == [
    ("gtzan", 1.0, ""),
    ("folder", 0.5, "mine:"),
  ]
