"""End-to-end smoke tests of the trainer and of every `jaxvae.main` mode on a tiny corpus,
plus 1-vs-4-device equality and mixed precision (kills at every write: tests/test_faults.py)."""

import json
import os

import jax
import numpy as np
import pytest

from conftest import ROOT
from conftest import load_config
from jaxvae import main as main_lib
from jaxvae.training import builder


def _cli(workdir, overrides, mode="train", config="conv_vae.py:small", extra=()):
  args = [
    f"--config=configs/{config}",
    f"--workdir={workdir}",
    f"--mode={mode}",
    "--no_progress",
    *extra,
  ] + [f"--config.{k}={v}" for k, v in overrides.items()]
  cwd = os.getcwd()
  os.chdir(ROOT)
  try:
    return main_lib.run(args)
  finally:
    os.chdir(cwd)


def _params(workdir, which="checkpoints"):
  import orbax.checkpoint as ocp

  mgr = ocp.CheckpointManager(os.path.join(workdir, which))
  step = mgr.latest_step()
  out = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore()))
  mgr.close()
  return step, out["state"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_overrides):
  """One short real run shared by the artifact, eval and resume tests."""
  workdir = str(tmp_path_factory.mktemp("run"))
  # The report drawn on its background thread (the CPU default draws in the loop's).
  full_report = {
    "train.report_tsne": "True",
    "train.report_audio": "True",
    "train.report_thread": "yes",
  }
  assert _cli(workdir, dict(tiny_overrides, **full_report)) == 0
  return workdir


def test_train_leaves_checkpoints_logs_and_pictures(trained):
  for name in (
    "checkpoints",
    "best",
    "tb",
    "metrics.jsonl",
    "training_curves.png",
    "reconstructions.png",
  ):
    assert os.path.exists(os.path.join(trained, name)), name
  rows = [json.loads(line) for line in open(os.path.join(trained, "metrics.jsonl"))]
  epochs = [r for r in rows if r.get("kind") == "epoch"]
  assert [r["epoch"] for r in epochs] == [1, 2]
  for key in ("train/loss", "train/recon", "train/kl", "val/loss", "val/recon_mse"):
    assert np.isfinite(epochs[-1][key]), key
  assert any("train/samples_per_s" in r for r in rows)
  assert os.listdir(os.path.join(trained, "tb"))
  report = os.path.join(trained, "reports", "epoch_0002")
  for name in (
    "reconstructions.png",
    "prior_samples.png",
    "latent_tsne.png",
    "reconstruction.wav",
    "prior_sample.wav",
  ):
    assert os.path.getsize(os.path.join(report, name)) > 100, name


def test_rerun_of_a_finished_run_resumes_and_does_nothing(trained, tiny_overrides):
  step_before, _ = _params(trained)
  assert _cli(trained, tiny_overrides) == 0
  step_after, _ = _params(trained)
  assert step_after == step_before


def test_resume_with_changed_hyperparameters(tmp_path, trained, tiny_overrides):
  """More epochs, a new learning rate and a new beta apply from the resumed step on."""
  import shutil

  workdir = tmp_path / "more"
  shutil.copytree(trained, workdir)
  changed = dict(tiny_overrides, **{"train.epochs": "3", "train.lr": "5e-4", "kl.beta_end": "0.5"})
  assert _cli(workdir, changed) == 0
  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  epochs = [r for r in rows if r.get("kind") == "epoch"]
  assert [r["epoch"] for r in epochs] == [1, 2, 3]  # epochs 1-2 from before, one more now
  assert epochs[1]["train/kl_weight"] == pytest.approx(1.0)
  assert epochs[2]["train/kl_weight"] == pytest.approx(0.5)
  step, _ = _params(str(workdir))
  assert step == 6


def test_a_step_budget_validates_every_n_steps_and_says_why_it_stopped(tmp_path, tiny_overrides):
  """train.eval_every_steps makes the trainer's epoch N steps (the :small presets' budget);
  the run file says why training ended; train.min_delta makes small gains count toward
  patience while the best checkpoint still follows them."""
  short = {"train.image_every_epochs": "0", "train.patience": "0"}
  budget = dict(tiny_overrides, **short, **{"train.eval_every_steps": "3", "train.max_steps": "7"})
  assert _cli(tmp_path / "budget", dict(budget, **{"train.epochs": "5"})) == 0
  rows = [json.loads(line) for line in open(tmp_path / "budget" / "metrics.jsonl")]
  assert [r["step"] for r in rows if r.get("kind") == "epoch"] == [3, 6, 7]
  run = json.load(open(tmp_path / "budget" / "jaxvae_run.json"))
  # 18 training clips in batches of 8: 2 steps a pass over the split.
  assert run["stopped"] | {"best_step": 0} == {
    "reason": "max_steps",
    "step": 7,
    "epochs": 3,
    "data_epochs": 3.5,
    "best_step": 0,
  }
  enough = dict(tiny_overrides, **short, **{"train.epochs": "2"})
  assert _cli(tmp_path / "epochs", enough) == 0
  assert json.load(open(tmp_path / "epochs" / "jaxvae_run.json"))["stopped"]["reason"] == "epochs"
  # Any gain under 90 % of the best counts toward patience: the run stops after epoch 2.
  picky = dict(enough, **{"train.epochs": "4", "train.patience": "1", "train.min_delta": "0.9"})
  assert _cli(tmp_path / "picky", picky) == 0
  run = json.load(open(tmp_path / "picky" / "jaxvae_run.json"))
  assert run["stopped"]["reason"] == "patience" and run["stopped"]["epochs"] == 2


def test_eval_mode_writes_metrics(trained, tiny_overrides):
  assert _cli(trained, tiny_overrides, mode="eval") == 0
  metrics = json.load(open(os.path.join(trained, "eval", "metrics.json")))
  assert np.isfinite(metrics["val"]["loss"])
  # The IWAE estimate; its K-sample mean ELBO is the validation loss (KL weight 1 by now)
  # up to the Gaussian's constant D/2 log pi and Monte Carlo noise.
  lk = metrics["likelihood"]
  assert lk["available"] and lk["iw_samples"] == 100 and lk["dims"] == 32 * 87
  assert lk["nll_nats"] <= -lk["elbo_nats"] + 1e-3 and lk["iwae_gap_nats"] >= 0
  assert lk["nll_bits_per_dim"] == pytest.approx(lk["nll_nats"] / (32 * 87 * np.log(2)))
  const = 0.5 * 32 * 87 * np.log(np.pi)
  assert -lk["elbo_nats"] - const == pytest.approx(metrics["val"]["loss"], rel=0.05)
  usage = metrics["latent_usage"]
  assert usage["latent_dim"] == 8 and 0 <= usage["active_units"] <= 8
  assert len(usage["kl_per_dim"]) == 8 and sum(usage["kl_per_dim"]) > 0
  sq = metrics["sample_quality"]
  assert sq["available"] and sq["embedding"].startswith("bands16")
  for key in ("prior", "prior_gmm", "reconstructions"):
    assert sq[key]["frechet"] >= 0 and np.isfinite(sq[key]["mmd2"]) and sq[key]["n_reference"] > 1
  assert sq["prior"]["n"] == 256 and sq["prior"]["prior"] == "N(0, I)"
  rec = metrics["reconstruction"]
  assert rec["lsd_db"] > 0 and 0 < rec["spectral_convergence"] < 10 and "exact" in rec["units"]
  assert rec["split"] == "validation" and rec["examples"] == lk["examples"] > 0
  # During training: active units per epoch, the per-dimension KL as a histogram.
  rows = [json.loads(line) for line in open(os.path.join(trained, "metrics.jsonl"))]
  assert all(0 <= r["val/active_units"] <= 8 for r in rows if r.get("kind") == "epoch")
  kl_rows = [r["val/kl_per_dim"] for r in rows if "val/kl_per_dim" in r]
  assert len(kl_rows) == 2 and len(kl_rows[-1]) == 8
  for label in ("genre", "language"):
    assert 0.0 <= metrics[label]["nmi"] <= 1.0
    assert label in metrics["baseline_pca_kmeans"]
  # eval.cluster_space's default: the active units, standardized
  space = metrics["cluster_space"]
  assert space["space"] == "standardized" and space["of"] == 8
  assert space["dims"] == metrics["latent_usage"]["active_units"]


def test_eval_runs_the_evaluators_the_config_lists(tmp_path, trained, tiny_overrides, capsys):
  """`eval.evaluators` overrides what the family declares: a list of names, run in order."""
  import shutil

  workdir = tmp_path / "run"
  shutil.copytree(trained, workdir)
  overrides = dict(tiny_overrides, **{"eval.evaluators": "validation,clustering"})
  assert _cli(workdir, overrides, mode="eval") == 0
  metrics = json.load(open(workdir / "eval" / "metrics.json"))
  assert {"val", "genre", "language", "cluster_space"} <= set(metrics)
  assert not {"likelihood", "latent_usage", "sample_quality", "baseline_pca_kmeans"} & set(metrics)
  bad = dict(tiny_overrides, **{"eval.evaluators": "validation,fid"})
  assert _cli(workdir, bad, mode="eval") == 1
  assert "config key 'eval.evaluators' names 'fid'" in capsys.readouterr().err


@pytest.mark.parametrize(
  "config, present, absent",
  [
    ("conv_vae.py:small", {"likelihood", "sample_quality"}, {"coherence", "latent_parts"}),
    ("puzzle_vqvae.py:small", {"reconstruction"}, {"likelihood", "latent_usage"}),
    ("multimodal_vae.py:small", {"coherence", "latent_parts"}, set()),
  ],
)
def test_each_family_declares_its_evaluators(config, present, absent):
  from jaxvae.evaluators import latents
  from jaxvae.variants import registry

  cfg = load_config(config, {})
  chosen = set(latents.default_names(registry.get(cfg.model.name), cfg))
  assert present <= chosen and not absent & chosen


def test_summary_mode(tmp_path, tiny_overrides, capsys):
  assert _cli(tmp_path, tiny_overrides, mode="summary") == 0
  out = capsys.readouterr().out
  total = json.load(open(tmp_path / "summary.json"))["total_params"]
  assert f"total params: {total}" in out
  assert total > 1000


def test_preprocess_and_validate_modes(tmp_path, tiny_overrides):
  assert _cli(tmp_path, tiny_overrides, mode="preprocess") == 0
  info = json.load(open(tmp_path / "preprocess.json"))
  assert info["examples"] == 24 and info["shape"] == [32, 87]
  assert _cli(tmp_path, tiny_overrides, mode="validate") == 0
  report = json.load(open(tmp_path / "validate.json"))
  assert report["ok"] == 24 and report["bad"] == []


def test_augmented_copies_are_training_only_and_masking_runs(tmp_path, tiny_overrides):
  overrides = dict(
    tiny_overrides,
    **{"data.augment.copies": "1", "data.augment.spec_mask": "True", "train.epochs": "1"},
  )
  assert _cli(tmp_path, overrides, mode="preprocess") == 0
  from jaxvae.data import store

  s = store.open_store(json.load(open(tmp_path / "preprocess.json"))["store"])
  rows = s.manifest["examples"]
  n_train = sum(1 for r in rows if r["split"] == "train" and not r["augment"])
  assert sum(1 for r in rows if r["augment"]) == n_train  # one copy per training clip
  assert all(r["split"] == "train" for r in rows if r["augment"])
  orig = [i for i, r in enumerate(rows) if r["split"] == "train" and not r["augment"]][0]
  copy = [i for i, r in enumerate(rows) if r["clip_id"] == rows[orig]["clip_id"] and r["augment"]]
  assert not np.allclose(s.features[orig], s.features[copy[0]])
  assert _cli(tmp_path, overrides) == 0


def test_clear_refuses_a_foreign_folder(tmp_path, tiny_overrides, capsys):
  (tmp_path / "precious.txt").write_text("x")
  assert _cli(tmp_path, tiny_overrides, mode="summary", extra=["--clear"]) == 1
  assert "not a jaxvae workdir" in capsys.readouterr().err
  assert (tmp_path / "precious.txt").exists()


def test_batch_that_does_not_divide_over_devices(tmp_path, tiny_overrides, capsys):
  assert jax.device_count() == 4
  overrides = dict(tiny_overrides, **{"train.batch_size": "6", "train.num_devices": "0"})
  assert _cli(tmp_path, overrides) == 1
  assert "does not divide over 4 devices" in capsys.readouterr().err


def _steps(config, n):
  run = builder.setup(config, progress=False)
  from jaxvae.data import pipeline

  it = pipeline.train_iterator(run.train_examples, config.train.batch_size, config.seed, config)
  state = run.state
  losses = []
  for _ in range(n):
    state, m = run.train_step(state, run.put(next(it)))
    losses.append(float(m["loss"]))
  return losses, jax.device_get(state.params)


def test_four_devices_match_one_device(tiny_overrides):
  # SGD, not Adam: Adam turns float noise in ~zero gradients (biases before BatchNorm) into
  # full-size steps, which would hide real disagreements behind a loose tolerance.
  sgd = dict(tiny_overrides, **{"train.optimizer": "sgd", "train.lr": "1e-3"})
  one = load_config("conv_vae.py:small", sgd, **{"train.num_devices": "1"})
  four = load_config("conv_vae.py:small", sgd, **{"train.num_devices": "4"})
  loss1, p1 = _steps(one, 4)
  loss4, p4 = _steps(four, 4)
  np.testing.assert_allclose(loss1, loss4, rtol=2e-4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6), p1, p4)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_mixed_precision_keeps_float32_params(tiny_overrides, dtype):
  config = load_config("conv_vae.py:small", tiny_overrides, dtype=dtype)
  losses, params = _steps(config, 2)
  assert all(np.isfinite(losses))
  assert {x.dtype for x in jax.tree.leaves(params)} == {np.dtype("float32")}


def test_generate_from_the_prior_writes_audio(trained, tiny_overrides):
  import soundfile as sf

  assert _cli(trained, tiny_overrides, mode="generate", extra=["--num_samples=2"]) == 0
  gen = os.path.join(trained, "generate")
  spec = np.load(os.path.join(gen, "prior_00.npy"), allow_pickle=False)
  assert spec.shape == (32, 87) and np.isfinite(spec).all()
  y, sr = sf.read(os.path.join(gen, "prior_01.wav"))
  assert sr == 22050 and abs(len(y) - 22050) <= 512 and np.abs(y).max() > 0
  assert os.path.exists(os.path.join(gen, "prior.png"))
  # The post-hoc prior: a mixture fitted to the training posteriors.
  extra = ["--num_samples=2", "--prior=gmm"]
  assert _cli(trained, tiny_overrides, mode="generate", extra=extra) == 0
  record = json.load(open(os.path.join(gen, "prior_gmm.json")))
  assert record["prior"] == "gmm" and record["gmm_components"] >= 1
  assert np.load(os.path.join(gen, "prior_gmm_01.npy")).shape == (32, 87)


def test_conditional_generation(tmp_path, tiny_overrides, capsys):
  overrides = dict(tiny_overrides, **{"train.max_steps": "1", "train.epochs": "1"})
  assert _cli(tmp_path, overrides, config="cvae.py:genre,small") == 0
  assert (
    _cli(
      tmp_path,
      overrides,
      mode="generate",
      config="cvae.py:genre,small",
      extra=["--condition=rock", "--num_samples=2"],
    )
    == 0
  )
  assert os.path.exists(tmp_path / "generate" / "rock_01.wav")
  assert (
    _cli(
      tmp_path, overrides, mode="generate", config="cvae.py:genre,small", extra=["--condition=jazz"]
    )
    == 1
  )
  assert "expected one of hiphop, pop, rock" in capsys.readouterr().err


def test_resources_are_logged_at_log_steps_and_summarized(short_run):
  """system/... scalars at every log step (metrics.jsonl; TensorBoard gets the same call), and
  the run's peaks and means in jaxvae_run.json. The CPU backend keeps no device statistics,
  so no device keys appear here (see the next test for a backend that does)."""
  rows = [json.loads(line) for line in open(os.path.join(short_run, "metrics.jsonl"))]
  logged = [r for r in rows if "train/loss" in r and r.get("kind") != "epoch"]
  assert len(logged) == 4  # log_every_steps=1, 4 steps
  for r in logged:
    assert r["system/host_rss_mb"] > 50 and r["system/host_peak_rss_mb"] >= r["system/host_rss_mb"]
    assert r["system/step_ms"] > 0 and r["system/samples_per_s"] > 0
    assert r["system/samples_per_s"] == pytest.approx(r["train/samples_per_s"])
    assert not any(k.startswith("system/device") for k in r)
  summary = json.load(open(os.path.join(short_run, "jaxvae_run.json")))["resources"]
  assert summary["host_peak_rss_mb"] >= max(r["system/host_rss_mb"] for r in logged) - 0.1
  assert summary["mean_step_ms"] > 0 and summary["mean_samples_per_s"] > 0
  assert "device_peak_mb" not in summary


def test_device_memory_is_summed_over_devices_and_peaks_kept():
  from jaxvae.training import resources

  class Device:
    def __init__(self, stats):
      self.stats = stats

    def memory_stats(self):
      return self.stats

  mb = resources.MB
  devices = [Device({"bytes_in_use": 2 * mb, "peak_bytes_in_use": 5 * mb}), Device(None)]
  assert resources.device_memory(devices) == {"bytes_in_use": 2 * mb, "peak_bytes_in_use": 5 * mb}
  monitor = resources.Monitor(devices=devices)
  first = monitor.sample(steps=4, seconds=2.0, batch_size=8)
  assert first["system/device_mb_in_use"] == 2 and first["system/device_peak_mb"] == 5
  assert first["system/step_ms"] == 500 and first["system/samples_per_s"] == 16
  devices[0].stats = {"bytes_in_use": 1 * mb, "peak_bytes_in_use": 3 * mb}
  monitor.sample(steps=1, seconds=1.0, batch_size=8)
  summary = monitor.summary()
  assert summary["device_peak_mb"] == 5  # the highest reading, not the last
  assert summary["mean_step_ms"] == pytest.approx(750) and summary["mean_samples_per_s"] == 12


def test_best_checkpoint_follows_train_best_metric(tmp_path, short_overrides, capsys):
  """best/ holds the epoch with the best value of `train.best_metric` in its direction (here
  the highest validation KL, which the loss would never pick for that reason); a metric the
  model does not report is one ConfigError before any training."""
  from jaxvae.training import metrics

  assert metrics.best_direction("accuracy") == "max" and metrics.best_direction("val/nmi") == "max"
  assert metrics.best_direction("recon_mse") == "min" and metrics.best_direction("ppl") == "min"
  assert metrics.best_direction("recon_mse", "max") == "max"
  assert metrics.improves(2.0, 1.0, True, "max") and not metrics.improves(2.0, 1.0, True, "min")
  assert metrics.improves(5.0, 1.0, False, "min") and not metrics.improves(
    np.nan, 1.0, False, "min"
  )
  # The usage figures `evaluate` derives are metrics too (checked before training).
  out = {"loss": 0, "count": 0, "counts": {"code_counts": 0}, "latent": {}}
  names = {"loss", "codes_used", "code_perplexity", "active_units"}
  assert set(metrics.split_metric_names(out)) == names

  overrides = dict(
    short_overrides, **{"train.best_metric": "val/kl", "train.best_direction": "max"}
  )
  assert _cli(tmp_path / "kl", overrides) == 0
  rows = [json.loads(line) for line in open(tmp_path / "kl" / "metrics.jsonl")]
  epochs = [r for r in rows if r.get("kind") == "epoch"]
  best = max(epochs, key=lambda r: r["val/kl"])
  step, _ = _params(str(tmp_path / "kl"), "best")
  assert step == best["step"]

  bad = dict(short_overrides, **{"train.best_metric": "recon_msee"})
  capsys.readouterr()
  assert _cli(tmp_path / "bad", bad) == 1
  err = capsys.readouterr().err
  assert "train.best_metric" in err and "recon_mse" in err and "Traceback" not in err
  assert not (tmp_path / "bad" / "checkpoints").exists()
