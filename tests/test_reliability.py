"""Runs that survive: divergence caught inside the step, one writer per workdir, damaged
checkpoints skipped, init_from that does not fit refused, honest epoch timing, and one-line
errors for a workdir that cannot be written or has no checkpoint."""

import json
import logging
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_train import _cli
from test_train import _params

from conftest import ROOT
from conftest import load_config
from jaxvae import errors
from jaxvae import workdir as workdir_lib
from jaxvae.data import pipeline
from jaxvae.training import builder
from jaxvae.training import loop
from jaxvae.training import metrics as metrics_lib
from jaxvae.training import state as train_state
from jaxvae.training import step as step_lib


def _last_error_line(capsys):
  err = capsys.readouterr().err
  assert "Traceback" not in err
  return err.strip().splitlines()[-1]


# ---------------------------------------------------------------------------------------------
# Divergence
# ---------------------------------------------------------------------------------------------


def test_nonfinite_step_keeps_the_state_and_counts_it(tiny_overrides):
  config = load_config("conv_vae.py:small", tiny_overrides)
  run = builder.setup(config, progress=False)
  batch = next(pipeline.eval_batches(run.train_examples, config.train.batch_size))
  state = run.state
  before = jax.device_get((state.params, state.opt_state, state.model_state))
  poisoned = dict(batch, x=np.where(np.arange(batch["x"].shape[-1]) == 3, np.nan, batch["x"]))
  state, metrics = run.train_step(state, run.put(poisoned))
  assert float(metrics["nonfinite"]) == 1.0 and not np.isfinite(float(metrics["loss"]))
  assert int(state.step) == 1  # the step counter (and so the RNG and data) moves on
  after = jax.device_get((state.params, state.opt_state, state.model_state))
  jax.tree.map(np.testing.assert_array_equal, after, before)
  state, metrics = run.train_step(state, run.put(batch))
  assert float(metrics["nonfinite"]) == 0.0
  changed = jax.tree.map(
    lambda a, b: not np.array_equal(a, b), jax.device_get(state.params), before[0]
  )
  assert any(jax.tree.leaves(changed))


def test_guard_checks_every_loss_and_gradient_norm_of_a_custom_step():
  """The VAE-GAN's step reports loss_d / grad_norm_d for its discriminator: a NaN there must
  skip the update too (a float16 loss scale is not a loss)."""
  state = train_state.TrainState(
    step=jnp.int32(0),
    params={"w": jnp.ones(3)},
    model_state={},
    opt_state={"mu": jnp.zeros(3)},
    rng=jax.random.PRNGKey(0),
  )

  def step(bad_key):
    def fn(s, batch):
      metrics = {
        "loss": jnp.float32(1.0),
        "grad_norm_g": jnp.float32(1.0),
        "loss_scale": jnp.float32(2.0**15),
        bad_key: jnp.float32(jnp.nan),
      }
      return s.replace(
        step=s.step + 1, params={"w": s.params["w"] + 1}, opt_state={"mu": s.opt_state["mu"] + 1}
      ), metrics

    return jax.jit(step_lib.skip_nonfinite(fn))

  for key in ("loss_d", "grad_norm_d"):
    new, metrics = step(key)(state, None)
    assert float(metrics["nonfinite"]) == 1.0 and int(new.step) == 1, key
    np.testing.assert_array_equal(new.params["w"], 1.0)
    np.testing.assert_array_equal(new.opt_state["mu"], 0.0)
  new, metrics = step("kl_not_a_loss")(state, None)  # only loss* and grad_norm* are checked
  assert float(metrics["nonfinite"]) == 0.0
  np.testing.assert_array_equal(new.params["w"], 2.0)


def test_nonfinite_watch_counts_runs_and_names_the_metric():
  watch = metrics_lib.NonfiniteWatch(3)
  ok, bad = (
    {"loss": 1.0, "nonfinite": 0.0},
    {"loss": float("nan"), "grad_norm": 1.0, "nonfinite": 1.0},
  )
  watch.update([ok, bad, bad, ok, bad], first_step=10)
  assert watch.run == 1 and watch.first_step == 14
  with pytest.raises(
    errors.DivergedError, match="3 steps in a row from step 14 had a non-finite loss"
  ):
    watch.update([bad, bad], first_step=15)


def test_diverging_run_stops_with_one_line_and_only_finite_checkpoints(
  tmp_path, tiny_overrides, capsys
):
  overrides = dict(
    tiny_overrides,
    **{
      "train.lr": "1e30",
      "train.clip_norm": "0.0",
      "train.max_nonfinite_steps": "2",
      "train.epochs": "4",
      "train.checkpoint_every_steps": "1",
      "train.image_every_epochs": "0",
    },
  )
  assert _cli(tmp_path, overrides) == 1
  line = _last_error_line(capsys)
  assert line.startswith("error: training diverged: 2 steps in a row from step ")
  for hint in ("non-finite", "loss", "train.lr", "train.clip_norm", "float32"):
    assert hint in line
  saved = 0
  for which in ("checkpoints", "best"):
    folder = tmp_path / which
    for step in [int(n) for n in os.listdir(folder) if n.isdigit()] if folder.exists() else []:
      import orbax.checkpoint as ocp

      mgr = ocp.CheckpointManager(str(folder))
      state = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore()))
      mgr.close()
      assert all(np.isfinite(x).all() for x in jax.tree.leaves(state["state"]["params"]))
      saved += 1
  assert saved
  text = open(tmp_path / "metrics.jsonl").read()
  assert "NaN" not in text and "Infinity" not in text  # strict JSON: non-finite is null
  rows = [json.loads(line) for line in text.splitlines()]
  assert sum(r.get("train/nonfinite_steps", 0) for r in rows) >= 2
  tags = _tb_scalars(tmp_path / "tb")
  assert tags and all(np.isfinite(v) for _, v in tags)
  assert any(t == "train/nonfinite_steps" and v > 0 for t, v in tags)
  first_bad = int(line.split("from step ")[1].split()[0])
  assert max(int(n) for n in os.listdir(tmp_path / "checkpoints") if n.isdigit()) <= first_bad


def _tb_scalars(folder):
  """(tag, value) of every scalar in the TensorBoard event files (TFRecord-framed Events)."""
  from tensorboardX.proto import event_pb2

  out = []
  for name in os.listdir(folder):
    data = open(os.path.join(folder, name), "rb").read()
    i = 0
    while i < len(data):
      (n,) = struct.unpack("<Q", data[i : i + 8])
      event = event_pb2.Event.FromString(data[i + 12 : i + 12 + n])
      out += [(v.tag, v.simple_value) for v in event.summary.value if v.HasField("simple_value")]
      i += 12 + n + 4
  return out


# ---------------------------------------------------------------------------------------------
# One writer per workdir
# ---------------------------------------------------------------------------------------------

_HOLD = (
  "import sys, time; from jaxvae import workdir; workdir.Lock(sys.argv[1]).acquire(); "
  "print('locked', flush=True); time.sleep(300)"
)


def test_second_writer_is_refused_and_a_dead_holders_lock_is_taken_over(
  tmp_path, capsys, tiny_overrides, caplog
):
  holder = subprocess.Popen(
    [sys.executable, "-c", _HOLD, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
  )
  try:
    assert holder.stdout.readline().strip() == "locked"
    assert _cli(tmp_path, tiny_overrides) == 1
    line = _last_error_line(capsys)
    assert f"is in use by process {holder.pid} on host " in line
    assert "use another --workdir" in line
    assert _cli(tmp_path, tiny_overrides, mode="summary", extra=["--clear"]) == 1
    assert "is in use by process" in _last_error_line(capsys)
    assert _cli(tmp_path, tiny_overrides, mode="tune") == 1
    assert "is in use by process" in _last_error_line(capsys)
    assert holder.poll() is None  # the first run is untouched
    assert not os.path.exists(tmp_path / "checkpoints")
    # Process 1 of a multi-host run has a lock of its own.
    with workdir_lib.Lock(str(tmp_path), process_index=1):
      pass
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  with caplog.at_level(logging.WARNING):
    with workdir_lib.Lock(str(tmp_path)):
      pass
  assert f"its holder (process {holder.pid} on host" in caplog.text
  assert os.path.getsize(tmp_path / "jaxvae.lock") == 0  # released cleanly: nothing to warn


# ---------------------------------------------------------------------------------------------
# Damaged checkpoints
# ---------------------------------------------------------------------------------------------


def _truncate_data(step_dir):
  for folder, _, files in os.walk(os.path.join(step_dir, "state")):
    for name in files:
      path = os.path.join(folder, name)
      with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


DAMAGE = {
  "truncated files": _truncate_data,
  "deleted state": lambda d: shutil.rmtree(os.path.join(d, "state")),
  "empty metadata": lambda d: open(os.path.join(d, "meta", "metadata"), "w").close(),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_newest_checkpoint_falls_back_to_an_intact_one(
  tmp_path, short_run, short_overrides, damage, caplog
):
  workdir = tmp_path / "run"
  shutil.copytree(short_run, workdir)
  DAMAGE[damage](str(workdir / "checkpoints" / "4"))
  # A save killed inside Orbax leaves a temporary folder beside the steps; it is not a step.
  shutil.copytree(
    workdir / "checkpoints" / "3", workdir / "checkpoints" / "4.orbax-checkpoint-tmp-1"
  )
  with caplog.at_level(logging.WARNING):
    assert _cli(workdir, short_overrides) == 0
  assert "checkpoint at step 4 cannot be restored" in caplog.text
  assert "Resuming from step 3" in caplog.text
  step_a, a = _params(str(workdir))
  step_b, b = _params(short_run)
  assert step_a == step_b == 4
  jax.tree.map(np.testing.assert_array_equal, a["params"], b["params"])


def test_no_intact_checkpoint_is_one_clear_error(tmp_path, short_run, short_overrides, capsys):
  workdir = tmp_path / "run"
  shutil.copytree(short_run, workdir)
  for step in os.listdir(workdir / "checkpoints"):
    _truncate_data(str(workdir / "checkpoints" / step))
  assert _cli(workdir, short_overrides) == 1
  line = _last_error_line(capsys)
  assert line.startswith(f"error: no checkpoint in '{workdir / 'checkpoints'}' can be restored")
  assert "--clear" in line


def test_a_resume_with_another_model_names_the_keys_that_changed(
  tmp_path, short_run, short_overrides, capsys
):
  """Checkpoints saved by another model config fit no template: the one error line names the
  model keys that differ from the run file's (read before the run rewrites it), or the
  features' shape and the data keys that changed it."""
  workdir = tmp_path / "run"
  shutil.copytree(short_run, workdir)
  assert _cli(workdir, dict(short_overrides, **{"model.latent_dim": "6"})) == 1
  line = _last_error_line(capsys)
  assert "hold another model's parameters" in line and "model.latent_dim: 8 -> 6" in line
  assert "model.channels" not in line  # unchanged keys are not named
  # Refused before the run file is rewritten: it still describes the checkpoints, so the
  # same mistake is explained again and the workdir still evaluates with its own model.
  run = json.load(open(workdir / "jaxvae_run.json"))
  assert run["config"]["model"]["latent_dim"] == 8
  assert _cli(workdir, dict(short_overrides, **{"model.latent_dim": "6"})) == 1
  assert "model.latent_dim: 8 -> 6" in _last_error_line(capsys)
  # Longer clips change the features' shape, and with it the dense layers' (no model key did).
  assert _cli(workdir, dict(short_overrides, **{"data.seconds": "1.5"})) == 1
  line = _last_error_line(capsys)
  assert "the features' shape: [32, 87] -> [32, 130]" in line and "data.seconds: 1.0 -> 1.5" in line
  assert "model." not in line.split("What changed")[1] and "data.n_mels" not in line


@pytest.mark.parametrize("mode", ["eval", "generate", "analyze"])
def test_modes_on_a_workdir_without_checkpoint(tmp_path, tiny_overrides, capsys, mode):
  assert _cli(tmp_path / "fresh", tiny_overrides, mode=mode) == 1
  line = _last_error_line(capsys)
  assert line.startswith(f"error: workdir '{tmp_path / 'fresh'}' has no checkpoint")
  assert "train it first" in line


def test_unwritable_workdir_is_one_line(tmp_path, tiny_overrides, capsys):
  (tmp_path / "a_file").write_text("x")
  workdir = tmp_path / "a_file" / "run"
  assert _cli(workdir, tiny_overrides) == 1
  line = _last_error_line(capsys)
  assert line == (
    f"error: --workdir '{workdir}' cannot be created or written (Not a "
    "directory); expected a writable folder"
  )


# ---------------------------------------------------------------------------------------------
# init_from
# ---------------------------------------------------------------------------------------------


def test_init_from_another_architecture_names_both_models(
  tmp_path, short_run, tiny_overrides, capsys
):
  overrides = {k: v for k, v in tiny_overrides.items() if not k.startswith("model.")}
  overrides["init_from"] = short_run
  assert _cli(tmp_path, overrides, config="basic_vae.py:small") == 1
  line = _last_error_line(capsys)
  assert "config key 'init_from'" in line
  assert "(model 'conv_vae') shares no parameter with this model ('basic_vae')" in line


def test_init_from_a_partial_match_warns_with_counts(short_run, caplog):
  """A model with one more layer and one resized layer (the progressive transformer stages do
  this): the matching leaves are loaded, the others keep their fresh values, both counted."""
  from jaxvae.training import checkpoint as ckpt_lib

  _, restored = _params(short_run)
  params = jax.tree.map(jnp.asarray, restored["params"])
  name = sorted(params)[0]
  first = sorted(params[name])[0]
  params[name][first] = jax.tree.map(
    lambda x: jnp.zeros(x.shape[:-1] + (x.shape[-1] + 1,)), params[name][first]
  )
  params["NewLayer"] = {"kernel": jnp.ones((3, 2))}
  template = train_state.TrainState(step=0, params=params, model_state={}, opt_state=None, rng=None)
  with caplog.at_level(logging.WARNING):
    loaded, _ = ckpt_lib.restore_weights(short_run, template, "conv_vae")
  message = next(r.getMessage() for r in caplog.records if "init_from" in r.getMessage())
  counts = re.search(
    r"loaded (\d+) leaves \(params/.*fresh initialization of (\d+) "
    r"\(params/",
    message,
  )
  assert counts, message
  total = len(jax.tree.leaves(params))
  assert int(counts.group(2)) == len(jax.tree.leaves(params[name][first])) + 1
  assert int(counts.group(1)) + int(counts.group(2)) == total
  np.testing.assert_array_equal(loaded["NewLayer"]["kernel"], 1.0)  # kept fresh


# ---------------------------------------------------------------------------------------------
# Honest timing
# ---------------------------------------------------------------------------------------------


def test_epoch_seconds_measure_finished_steps(tmp_path, tiny_overrides, monkeypatch):
  """Each step's metrics pass through a 0.4 s sleep on the device side (a callback, enqueued
  behind the step and run asynchronously to Python). An epoch's `seconds` must include that
  work, not only the
  asynchronous dispatch of the steps."""
  sleep = jax.jit(lambda m: (jax.debug.callback(lambda _: time.sleep(0.4), m["loss"]), m)[1])
  build = builder.build

  def slow_build(*args, **kwargs):
    compiled = build(*args, **kwargs)
    compiled.train_steps = [
      (lambda f: lambda state, batch: (lambda out: (out[0], sleep(out[1])))(f(state, batch)))(f)
      for f in compiled.train_steps
    ]
    return compiled

  monkeypatch.setattr(builder, "build", slow_build)
  overrides = dict(
    tiny_overrides, **{"train.image_every_epochs": "0", "train.log_every_steps": "100"}
  )
  config = load_config("conv_vae.py:small", overrides)
  loop.train_and_evaluate(config, str(tmp_path), progress=False)
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  second = [r for r in rows if r.get("kind") == "epoch"][1]  # no compile in it
  assert second["seconds"] >= 2 * 0.4
  assert second["samples_per_s"] == pytest.approx(
    2 * config.train.batch_size / second["seconds"], rel=0.01
  )


def test_workdir_from_before_the_redesign_evaluates_and_resumes(tmp_path, tiny_overrides):
  """tests/data/workdir_v0 was written by the code before the package moved into folders
  (its checkpoints hold the run bookkeeping as the old JSON dict): today's code evaluates its
  best checkpoint and resumes it from step 2 to the end of epoch 2."""
  workdir = str(tmp_path / "old")
  shutil.copytree(os.path.join(ROOT, "tests", "data", "workdir_v0"), workdir)
  overrides = dict(tiny_overrides, **{"train.image_every_epochs": "0", "eval.plots": ""})
  assert _cli(workdir, overrides, mode="eval") == 0
  metrics = json.load(open(os.path.join(workdir, "eval", "metrics.json")))
  assert metrics["step"] == 2 and np.isfinite(metrics["val"]["loss"])
  assert _cli(workdir, overrides) == 0
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [(r["epoch"], r["step"]) for r in rows if r.get("kind") == "epoch"] == [(1, 2), (2, 4)]
  step, state = _params(workdir)
  assert step == 4 and int(state["step"]) == 4
