"""Crash consistency by fault injection: a run is SIGKILLed at each named fault point
(`jaxvae/faults.py`, JAXVAE_FAULT=<point>:<n>) and the same command is run again. It must
succeed, end with bitwise the parameters of an uninterrupted run, and leave metrics.jsonl with
each epoch and step once. Store and corpus builds killed half-way are never read as complete.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from test_train import _cli
from test_train import _params

from conftest import ROOT
from conftest import load_config
from jaxvae import errors
from jaxvae import faults

# Reports only read the state: the run with them (for report.written) ends like the others.
REPORTS = {
  "train.image_every_epochs": "1",
  "train.report_samples": "False",
  "train.report_audio": "False",
  "train.report_tsne": "False",
}

# (point, pass): where each kill lands in that run. Saves: 1 (mid-epoch), 2 (end of epoch 1),
# 3 (mid-epoch), 4 (end); metrics rows: step 1, step 2, epoch 1, step 3, ...
TRAINING_KILLS = [
  ("run_file", 1),  # before the first step: a fresh start
  ("train.step", 3),  # mid-epoch 2, before its first checkpoint
  ("metrics.line", 3),  # epoch 1's record torn in half
  ("epoch.logged", 1),  # epoch 1 logged, no checkpoint of it yet
  ("checkpoint.issued", 2),  # end of epoch 1's save in flight (asynchronous)
  ("checkpoint.latest", 2),  # end of epoch 1 saved, best not linked from it yet
  ("checkpoint.best", 1),  # best of epoch 1 linked, the older best not removed
  ("checkpoint.latest", 3),  # mid-epoch 2 saved
  ("report.written", 2),  # half of epoch 2's report
  ("finish", 1),  # training done, end-of-run files half written
  ("run_file", 2),  # the end of the run: the run file with `resources` not yet in place
]
DATA_KILLS = [
  "demo.clip",
  "store.chunk",
  "store.commit",
  "tokens.commit",
  "lyrics.commit",
  "tune.trial",
]  # tune.trial: tests/test_tune.py
# chorales.commit: converting music21's chorales is too slow for the suite; it uses the same
# temporary-folder-then-rename code as the stores (tested here by store.commit).
UNTESTED = {"chorales.commit"}
DOWNLOAD_KILLS = {"download.chunk", "extract.file", "download.record"}  # test_download.py
SURVIVAL = {"stop.saving", "export.file"}  # test_survival.py: a second signal, a full disk


def test_every_fault_point_is_in_the_code_and_tested():
  source = ""
  for folder, _, files in os.walk(os.path.join(ROOT, "jaxvae")):
    source += "".join(
      open(os.path.join(folder, f)).read() for f in files if f.endswith(".py") and f != "faults.py"
    )
  assert [p for p in faults.POINTS if f'"{p}"' not in source] == []
  tested = {p for p, _ in TRAINING_KILLS} | set(DATA_KILLS) | UNTESTED | DOWNLOAD_KILLS | SURVIVAL
  assert tested == set(faults.POINTS)


def test_unknown_fault_point_is_refused():
  with pytest.raises(ValueError, match="expected <point>:<n>"):
    faults._parse("checkpoint.lates:1")
  with pytest.raises(ValueError, match="n >= 1"):
    faults._parse("checkpoint.latest:0")


def _killed(args, point, n):
  """Runs `args` with the fault set; asserts the process died of SIGKILL there."""
  _wait_killed(_start(args, point, n), point, n)


def _start(args, point, n):
  env = dict(os.environ, JAXVAE_FAULT=f"{point}:{n}")
  return subprocess.Popen(
    args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
  )


def _wait_killed(proc, point, n):
  _, err = proc.communicate(timeout=600)
  assert proc.returncode == -9, f"{point}:{n} did not kill the run:\n{err[-3000:]}"


def _train_args(workdir, overrides, config="conv_vae.py:small"):
  return [
    sys.executable,
    "-m",
    "jaxvae.main",
    f"--config=configs/{config}",
    f"--workdir={workdir}",
    "--no_progress",
  ] + [f"--config.{k}={v}" for k, v in overrides.items()]


def assert_same_checkpoints(workdir, reference):
  """The latest and best checkpoints of `workdir` hold bitwise the step, parameters and
  optimizer state of `reference`'s (an uninterrupted run)."""
  for which in ("checkpoints", "best"):
    step_a, a = _params(str(workdir), which)
    step_b, b = _params(str(reference), which)
    assert step_a == step_b, which
    jax.tree.map(np.testing.assert_array_equal, a["params"], b["params"])
    jax.tree.map(np.testing.assert_array_equal, a["opt_state"], b["opt_state"])


def _metrics(workdir):
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  epochs = [r["epoch"] for r in rows if r.get("kind") == "epoch"]
  steps = [r["step"] for r in rows if "train/loss" in r and r.get("kind") != "epoch"]
  return epochs, steps


def _overrides(base, point):
  return dict(base, **REPORTS) if point == "report.written" else base


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory, short_overrides, short_run):
  """The training runs of TRAINING_KILLS, each killed at its point: {point: workdir}. Three
  run at a time (their startup is mostly single-threaded Python), after `short_run` filled
  the compile cache."""
  root = tmp_path_factory.mktemp("killed")
  runs = {(point, n): root / f"{point.replace('.', '_')}_{n}" for point, n in TRAINING_KILLS}
  pending = list(runs.items())
  while pending:
    batch, pending = pending[:3], pending[3:]
    procs = [
      (point, n, _start(_train_args(w, _overrides(short_overrides, point)), point, n))
      for (point, n), w in batch
    ]
    for point, n, proc in procs:
      _wait_killed(proc, point, n)
  return runs


@pytest.mark.parametrize("point, n", TRAINING_KILLS)
def test_kill_at_fault_point_then_rerun_matches_uninterrupted(
  killed_runs, short_run, short_overrides, point, n
):
  workdir = killed_runs[point, n]
  assert _cli(workdir, _overrides(short_overrides, point)) == 0  # the same command again
  assert_same_checkpoints(workdir, short_run)
  epochs, steps = _metrics(workdir)
  assert epochs == [1, 2]
  assert steps == [1, 2, 3, 4]
  assert json.load(open(workdir / "jaxvae_run.json"))["config"]["train"]["epochs"] == 2
  pictures = ["training_curves.png"] + (
    ["reconstructions.png"] if point == "report.written" else []
  )
  for name in pictures:
    with open(workdir / name, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
  leftovers = [os.path.join(d, n) for d, _, files in os.walk(workdir) for n in files if ".tmp" in n]
  assert not leftovers


_BUILD_STORE = (
  "import json, sys; from jaxvae.variants import registry; from jaxvae.data import store; "
  "store.build(registry.load_config(sys.argv[1], json.loads(sys.argv[2])), "
  "progress=False)"
)


def _published(folder):
  """Stores that a reader would open: folders under their final name."""
  return [k for k in os.listdir(folder) if ".tmp." not in k] if os.path.isdir(folder) else []


def _leftovers(cache):
  return [
    os.path.join(d, n) for d, dirs, files in os.walk(cache) for n in dirs + files if ".tmp." in n
  ]


def test_feature_store_and_demo_corpus_killed_half_way_are_rebuilt(tmp_path, tiny_overrides):
  from jaxvae.data import store as store_lib

  overrides = dict(tiny_overrides, **{"data.cache_dir": str(tmp_path / "cache")})
  args = [
    sys.executable,
    "-c",
    _BUILD_STORE,
    os.path.join(ROOT, "configs/conv_vae.py:small"),
    json.dumps(overrides),
  ]
  for point in ("demo.clip", "store.chunk", "store.commit"):
    _killed(args, point, 1 if point != "demo.clip" else 5)
    assert not _published(tmp_path / "cache" / "features"), point
    if point == "demo.clip":
      assert not _published(tmp_path / "cache" / "demo")
  built = store_lib.build(load_config("conv_vae.py:small", overrides), progress=False)
  assert not _leftovers(tmp_path / "cache"), "temporary folders of killed builds remain"
  reference = store_lib.build(load_config("conv_vae.py:small", tiny_overrides), progress=False)
  np.testing.assert_array_equal(np.asarray(built.features), np.asarray(reference.features))
  assert len(built.manifest["examples"]) == len(reference.manifest["examples"])


def test_token_store_killed_before_publishing_is_rebuilt(tmp_path):
  pytest.importorskip("pretty_midi")
  from test_music import midi_folder_overrides

  from jaxvae.data import tokens

  _, overrides = midi_folder_overrides(tmp_path)
  code = (
    "import json, sys; from jaxvae.variants import registry; from jaxvae.data import tokens; "
    "tokens.build(registry.load_config(sys.argv[1], json.loads(sys.argv[2])), progress=False)"
  )
  spec = os.path.join(ROOT, "configs/music_transformer_vaegan.py:small")
  _killed([sys.executable, "-c", code, spec, json.dumps(overrides)], "tokens.commit", 1)
  assert not _published(tmp_path / "cache" / "tokens")
  store = tokens.build(load_config("music_transformer_vaegan.py:small", overrides), progress=False)
  assert len(store.manifest["examples"]) == store.features.shape[0] > 0
  assert not _leftovers(tmp_path / "cache")


def test_lyrics_store_killed_between_its_files_is_refused_then_rewritten(tmp_path):
  from jaxvae.data import lyrics

  out = str(tmp_path / "lyrics")
  lyrics.write_embeddings(out, ["a", "b"], np.ones((2, 3)), info={})
  code = (
    "import sys, numpy as np; from jaxvae.data import lyrics; "
    "lyrics.write_embeddings(sys.argv[1], ['a', 'b', 'c'], np.zeros((3, 4)), info={})"
  )
  _killed([sys.executable, "-c", code, out], "lyrics.commit", 1)
  with pytest.raises(errors.DataError, match="no clips.json .an interrupted write"):
    lyrics.Lyrics(out, ["a", "b", "c"])
  lyrics.write_embeddings(out, ["a", "b", "c"], np.zeros((3, 4)), info={})
  table = lyrics.Lyrics(out, ["a", "b", "c"])
  assert table.dim == 4 and table.mask.tolist() == [1, 1, 1]
