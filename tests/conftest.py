"""Shared fixtures. Every test process sees 4 CPU devices; the tiny runs (`TINY`) train on a
1-device mesh (`train.num_devices=1`: a 4-device step compiles ~25 % slower, and the suite is
mostly compiling), and the tests of the data-parallel path (batch sharded over a `data` mesh
axis: test_multidevice.py, test_train.py's four-devices-match-one, test_vq_multidevice.py, the
quantizers' and puzzle's multi-device tests) ask for their devices themselves."""

import os

# Must happen before JAX initializes its backend (i.e. before any test touches a device).
# The suite's time is mostly XLA compiling tiny steps; LLVM's backend optimizations change how
# fast the code runs, not what it computes, and without them the suite compiles about 30 %
# faster (tests/test_configs.py: 58 s -> 40 s). Benchmarks (tools/benchmark.py) use defaults.
os.environ.setdefault(
  "XLA_FLAGS", "--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0"
)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent XLA compilation cache for the sessions and the CLI subprocesses they start:
# many tests compile the same tiny steps (same config, same shapes) in fresh jit objects or
# processes, and a cache hit skips XLA's compile. It outlives the session (the suite's
# programs change little between runs; entries are keyed by the program, the XLA flags and
# the jax version, so a stale one is never used), under ~/.cache/jaxvae/test-xla, capped at
# 2 GB where filelock is installed (least recently used entries evicted; without it the
# folder is not capped: delete it to reclaim the space). A run from an empty
# cache is the cold time BUILD_NOTES.md reports beside the warm one.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(_cache_home, "jaxvae", "test-xla")
  try:  # jax evicts by size only with filelock installed (else it refuses a size)
    import filelock  # noqa: F401

    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(2 * 1024**3))
  except ImportError:
    pass
  # Programs that compile in under 0.2 s are not worth a disk write (with no floor, one pair
  # of runs of test_faults + test_train was 12 % faster, the whole suite 6 % slower).
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A conv VAE on a 24-clip demo corpus of 1 s clips at 32 mels: seconds per run on 2 cores.
TINY = {
  "data.seconds": "1.0",
  "data.n_mels": "32",
  "data.n_fft": "512",
  "data.hop_length": "256",
  "data.demo.clips_per_class": "2",
  "data.val_fraction": "0.25",
  "train.batch_size": "8",
  "train.num_devices": "1",
  "train.epochs": "2",
  # Epochs of the data, not the :small presets' step budget (50-step epochs, 2,000 steps).
  "train.eval_every_steps": "0",
  "train.max_steps": "0",
  "kl.steps": "0",
  "train.log_every_steps": "1",
  "train.image_every_epochs": "1",
  "model.latent_dim": "8",
  "model.channels": "(4, 8, 8)",
  "kl.epochs": "1.0",
  "eval.plots": "tsne",
  # Reports draw their reconstructions and prior samples; the t-SNE map and Griffin-Lim audio
  # (~0.7 s a report) are drawn in the one run that checks them (test_train.py's `trained`).
  "train.report_tsne": "False",
  "train.report_audio": "False",
}


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
  """One feature/demo cache for the whole session: the tiny corpus is synthesized once."""
  path = str(tmp_path_factory.mktemp("jaxvae_cache"))
  os.environ["JAXVAE_CACHE"] = path
  return path


@pytest.fixture(scope="session")
def tiny_overrides(cache_dir):
  return dict(TINY, **{"data.cache_dir": cache_dir})


def load_config(name: str, overrides: dict, **more):
  from jaxvae.variants import registry

  return registry.load_config(os.path.join(ROOT, "configs", name), {**overrides, **more})


# The short run most reliability tests compare with or copy: TINY, 2 epochs x 2 steps, a
# checkpoint every step, no reports (reports only read the state, so a run with them ends with
# the same parameters).
SHORT_RUN = {"train.checkpoint_every_steps": "1", "train.image_every_epochs": "0"}


@pytest.fixture(scope="session")
def short_overrides(tiny_overrides):
  return dict(tiny_overrides, **SHORT_RUN)


@pytest.fixture(scope="session")
def short_run(tmp_path_factory, short_overrides):
  """An uninterrupted short run's workdir (also fills the compile cache for the others)."""
  from jaxvae import main as main_lib

  workdir = str(tmp_path_factory.mktemp("short_run"))
  args = ["--config=configs/conv_vae.py:small", f"--workdir={workdir}", "--no_progress"] + [
    f"--config.{k}={v}" for k, v in short_overrides.items()
  ]
  cwd = os.getcwd()
  os.chdir(ROOT)
  try:
    assert main_lib.run(args) == 0
  finally:
    os.chdir(cwd)
  return workdir
