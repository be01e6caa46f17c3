"""Config loading, overrides and the one-line error messages."""

import subprocess
import sys

import pytest

from conftest import ROOT
from conftest import load_config
from jaxvae import errors
from jaxvae.data import listing


def test_preset_and_override_types():
  config = load_config(
    "conv_vae.py:small", {"train.epochs": "3", "train.lr": "1e-4", "model.channels": "[8, 16, 32]"}
  )
  assert config.data.n_mels == 64  # from the preset
  assert config.train.epochs == 3 and isinstance(config.train.epochs, int)
  assert config.train.lr == pytest.approx(1e-4)
  assert config.model.channels == (8, 16, 32)
  assert config.is_locked


@pytest.mark.parametrize(
  "overrides, message",
  [
    ({"train.epoch": "3"}, "unknown config key 'train.epoch'; did you mean train.epochs"),
    ({"dtype": "float64"}, "config key 'dtype' is 'float64'; expected one of float32"),
    ({"train.batch_size": "0"}, "config key 'train.batch_size' is 0; expected an integer >= 1"),
    ({"train.batch_size": "-8"}, "config key 'train.batch_size' is -8; expected an integer >= 1"),
    ({"train.epochs": "many"}, "config key 'train.epochs' is 'many'; expected an integer"),
    ({"train.epochs": "abc"}, "config key 'train.epochs' is 'abc'; expected an integer"),
    ({"train.epochs": "2.5"}, "config key 'train.epochs' is '2.5'; expected an integer"),
    ({"train.lr": "-1"}, "config key 'train.lr' is -1.0; expected a number > 0"),
    ({"train.lr": "fast"}, "config key 'train.lr' is 'fast'; expected a number"),
    ({"model.latent_dim": "0"}, "config key 'model.latent_dim' is 0; expected an integer >= 1"),
    ({"data.sr": "0"}, "config key 'data.sr' is 0; expected an integer >= 1"),
    (
      {"train.max_nonfinite_steps": "-1"},
      "config key 'train.max_nonfinite_steps' is -1; expected an integer >= 0",
    ),
    ({"model.channels": "wide"}, "config key 'model.channels' is 'wide'; expected a tuple"),
    ({"model.name": "nope"}, "config key 'model.name' is 'nope'; expected one of"),
    ({"train": "1"}, "config key 'train' is a group"),
    ({"model.conv_transpose": "fft"}, "config key 'model.conv_transpose' is 'fft'"),
    ({"data.db_reference": "max"}, "config key 'data.db_reference' is 'max'; expected one of"),
    (
      {"data.db_reference": "peak", "data.scale": "log1p"},
      "config key 'data.db_reference' is 'peak', which applies to dB features",
    ),
    ({"eval.num_generated": "0"}, "config key 'eval.num_generated' is 0"),
    ({"generate.interpolation_steps": "1"}, "config key 'generate.interpolation_steps' is 1"),
  ],
)
def test_bad_config_names_the_key(overrides, message):
  with pytest.raises(errors.ConfigError, match=message.replace("(", r"\(")):
    load_config("conv_vae.py:small", overrides)


def test_float16_vaegan_is_refused():
  with pytest.raises(errors.ConfigError, match="config key 'dtype' is 'float16'"):
    load_config("music_transformer_vaegan.py:small", {"stage": "3", "dtype": "float16"})


def test_unknown_preset():
  with pytest.raises(errors.ConfigError, match="unknown preset 'huge'"):
    load_config("conv_vae.py:huge", {})


def test_cli_error_is_one_line_without_traceback(tmp_path):
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "jaxvae.main",
      "--config=configs/conv_vae.py:small",
      f"--workdir={tmp_path}",
      "--config.train.epoch=3",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 1
  assert "Traceback" not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown config key 'train.epoch'")


def test_missing_data_root_is_a_clear_error(tmp_path):
  from jaxvae.data import dataset

  with pytest.raises(errors.DataError, match="config key 'data.root' is empty"):
    listing.list_dataset(load_config("conv_vae.py:small", {"data.layout": "gtzan"}))
  config = load_config(
    "conv_vae.py:small", {"data.layout": "gtzan", "data.root": str(tmp_path / "nowhere")}
  )
  with pytest.raises(errors.DataError, match="nowhere"):
    dataset.spec_from_config(config)


@pytest.mark.parametrize(
  "argv, message",
  [
    (["--mode=eval", "--onnx"], "--onnx is an option of --mode=export"),
    (["--num_samples=3"], "--num_samples is an option of --mode=generate"),
    (["--mode=export", "--attribute=genre:a->b"], "--attribute is an option of --mode=generate"),
    (["--mode=generate", "--prior=gmm", "--interpolate=a.wav,b.wav"], "--prior is for sampling"),
    (["--epochs=3"], "unrecognized argument '--epochs=3' (config overrides look like"),
    (["--mode=fit"], "argument --mode: invalid choice: 'fit'"),
  ],
)
def test_a_command_line_mistake_is_one_line_and_status_1(argv, message, capsys):
  """Each mode owns its flags (`add_arguments` in its module); main refuses them elsewhere.
  Every command-line mistake is one line and exit status 1, as a config mistake is."""
  from jaxvae import main as main_lib

  with pytest.raises(SystemExit) as exit_info:
    main_lib.parse_args(["--config=configs/conv_vae.py", "--workdir=unused", *argv])
  assert exit_info.value.code == 1
  err = capsys.readouterr().err
  assert message in err and err.count("\n") == 1 and err.startswith("error: "), err


def test_progress_bars_are_off_when_stderr_is_not_a_terminal(monkeypatch):
  """A scheduler's log file gets the epoch lines, not bars redrawn with carriage returns
  (every mode that builds a store or trains reads `args.progress`: tests/test_train.py)."""
  import io

  from jaxvae import main as main_lib

  argv = ["--config=c.py", "--workdir=w"]
  monkeypatch.setattr(main_lib.sys, "stderr", io.StringIO())
  assert not main_lib.parse_args(argv).progress
  assert not main_lib.parse_args(argv).no_progress  # a download keeps its bar

  class Terminal(io.StringIO):
    def isatty(self):
      return True

  monkeypatch.setattr(main_lib.sys, "stderr", Terminal())
  assert main_lib.parse_args(argv).progress
  assert not main_lib.parse_args(argv + ["--no_progress"]).progress


def test_mode_flags_reach_their_mode():
  from jaxvae import main as main_lib

  args = main_lib.parse_args(
    ["--config=c.py", "--workdir=w", "--mode=generate", "--num_samples=3", "--prior=gmm"]
  )
  assert (args.num_samples, args.prior, args.onnx) == (3, "gmm", False)
