"""`python -m jaxvae.main --config=configs/<name>.py[:preset] --workdir=DIR [--mode=MODE]`.

Overrides: `--config.train.epochs=3 --config.data.root=/data/gtzan`. Re-running the same
command in the same workdir resumes training from the latest checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys

import jax

from jaxvae import errors
from jaxvae import multihost
from jaxvae import workdir as workdir_lib
from jaxvae.config import loading
from jaxvae.modes import analyze
from jaxvae.modes import clear
from jaxvae.modes import download
from jaxvae.modes import evaluate
from jaxvae.modes import export
from jaxvae.modes import generate
from jaxvae.modes import preprocess
from jaxvae.modes import summary
from jaxvae.modes import train
from jaxvae.modes import tune
from jaxvae.modes import validate
from jaxvae.training import checkpoint
from jaxvae.training import compile_cache
from jaxvae.training import preemption
from jaxvae.variants import registry

# Every mode is `run(config, workdir, args) -> exit status`; `args` are the parsed flags plus
# `args.overrides` ({'a.b': 'value'} from --config.a.b=value).
MODES = {
  "train": train.run,
  "eval": evaluate.run,
  "analyze": analyze.run,
  "generate": generate.run,
  "tune": tune.run,
  "summary": summary.run,
  "preprocess": preprocess.run,
  "validate": validate.run,
  "download": download.run,
  "export": export.run,
}
# Modes with flags of their own (`add_arguments(group)`, `check_arguments(args, parser)`).
MODE_FLAGS = {"generate": generate, "export": export}
WRITES = ("train", "tune")  # modes that hold the workdir's lock (one writer per workdir)
READS_CHECKPOINT = ("eval", "generate", "analyze", "export")


def parse_args(argv: list[str]):
  parser = loading.Parser(
    prog="python -m jaxvae.main",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument("--config", required=True, help="configs/<name>.py[:preset]")
  parser.add_argument("--workdir", required=True, help="run directory (the only state)")
  parser.add_argument("--mode", default="train", choices=tuple(MODES))
  parser.add_argument(
    "--clear",
    action="store_true",
    help="delete this workdir's run outputs first (no question asked)",
  )
  parser.add_argument(
    "--no_progress",
    action="store_true",
    help="no progress bars (only a download's are drawn when stderr is not a terminal)",
  )
  # A mode's own flags: `add_arguments(group)` of its module, in a help group of its own; given
  # with another mode they are one error naming the mode they belong to.
  owned = {}
  for mode, module in MODE_FLAGS.items():
    before = {a.dest for a in parser._actions}
    module.add_arguments(parser.add_argument_group(f"--mode={mode}"))
    owned[mode] = [a for a in parser._actions if a.dest not in before]
  args, rest = parser.parse_known_args(argv)
  for mode, actions in owned.items():
    for action in actions:
      if mode != args.mode and getattr(args, action.dest) != action.default:
        parser.error(f"{action.option_strings[0]} is an option of --mode={mode}")
  if args.mode in MODE_FLAGS:
    MODE_FLAGS[args.mode].check_arguments(args, parser)
  args.overrides = loading.overrides_from_args(parser, rest)
  # Bars (training, preprocessing, validation) only in a terminal: a log file gets the
  # per-epoch lines, not a bar redrawn with carriage returns. A download keeps its bar unless
  # --no_progress (its only sign of life for minutes).
  args.progress = not args.no_progress and sys.stderr.isatty()
  return args


# Exit statuses: 0 done, 1 an error (one line on stderr), 75 a training run stopped on request
# (SIGTERM, SIGINT, train.max_runtime) with its state saved: re-run the same command; 130 a mode
# other than training interrupted by Ctrl-C.
EXIT_STOPPED = preemption.EXIT_STOPPED
EXIT_INTERRUPTED = 130
_exit_at_once = False  # a full disk: skip the interpreter's shutdown (Orbax's threads' noise)


def run(argv: list[str]) -> int:
  global _exit_at_once
  args = parse_args(argv)
  _log_to_stderr()
  try:
    config = registry.load_config(args.config, args.overrides)
    return _run_mode(args, config)
  except preemption.Stopped as e:
    logging.warning("%s", e)
    return EXIT_STOPPED
  except errors.USER_ERRORS as e:
    _exit_at_once = isinstance(e, errors.DiskFullError)
    print(f"error: {e}", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print(f"error: --mode={args.mode} interrupted (Ctrl-C)", file=sys.stderr)
    return EXIT_INTERRUPTED
  except Exception as e:
    if not workdir_lib.is_disk_full(e):
      raise
    _exit_at_once = True
    error = workdir_lib.disk_full_error(e, args.workdir, f"running --mode={args.mode}", None, None)
    print(f"error: {error}", file=sys.stderr)
    return 1


class _Stderr(logging.StreamHandler):
  """A handler that writes to whatever `sys.stderr` is when it emits (not the stream of the
  moment it was made: a caller that replaced stderr, such as a test capture, may have closed
  that one since)."""

  def __init__(self):
    super().__init__(sys.stderr)

  @property
  def stream(self):
    return sys.stderr

  @stream.setter
  def stream(self, value):
    del value


def _log_to_stderr() -> None:
  """INFO and above to stderr as `HH:MM:SS LEVEL message`. Importing orbax has already called
  `logging.basicConfig`: its stderr handler is reformatted rather than doubled (and handlers
  of others, such as pytest's, are left alone)."""
  root = logging.getLogger()
  handlers = [h for h in root.handlers if type(h) in (logging.StreamHandler, _Stderr)]
  if not handlers:
    handlers = [_Stderr()]
    root.addHandler(handlers[0])
  for handler in handlers:
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
  root.setLevel(logging.INFO)
  # Orbax and Grain log every checkpoint file operation at INFO through absl; JAX logs each
  # backend it could not start (TPU on every machine without one) at INFO.
  logging.getLogger("absl").setLevel(logging.WARNING)
  logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
  for handler in handlers:
    if not any(isinstance(f, _DiskFullNoise) for f in handler.filters):
      handler.addFilter(_DiskFullNoise())


class _DiskFullNoise(logging.Filter):
  """Drops what libraries log (with tracebacks) when a checkpoint write meets a full disk:
  Orbax reports it from each of its threads; the run reports it once, as one error line."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.name == "root" or record.name.startswith("jaxvae"):
      return True
    text = record.getMessage() + (str(record.exc_info[1]) if record.exc_info else "")
    return not any(marker in text for marker in workdir_lib.DISK_FULL_TEXT)


def _run_mode(args, config) -> int:
  if config.distributed:
    multihost.initialize_distributed()
  compile_cache.enable(config)
  workdir_lib.ensure_writable(args.workdir)
  with contextlib.ExitStack() as stack:
    if args.clear or args.mode in WRITES:  # --clear must not pull a live run's files away
      stack.enter_context(workdir_lib.Lock(args.workdir, jax.process_index()))
    if args.clear:
      clear.clear(args.workdir)
    if args.mode in READS_CHECKPOINT and not checkpoint.saved_steps(args.workdir):
      raise errors.CheckpointError(
        f"workdir '{args.workdir}' has no checkpoint (nothing in checkpoints/ or best/); "
        f"train it first: python -m jaxvae.main --config={args.config} "
        f"--workdir={args.workdir}"
      )
    return MODES[args.mode](config, args.workdir, args)


def main() -> None:
  status = run(sys.argv[1:])
  if _exit_at_once:
    # The error line is out; a save that failed on a full disk leaves Orbax's writer threads
    # and event loops behind, whose teardown would print pages of tracebacks.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
  sys.exit(status)


if __name__ == "__main__":
  main()
