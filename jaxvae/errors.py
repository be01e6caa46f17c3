"""Errors that end a run with one line and exit status 1 (no traceback).

`jaxvae.main` prints `error: <message>` for these; the message alone must tell the user what
went wrong, where (file, key, step, process) and what to do.
"""


class ConfigError(ValueError):
  """A config key is unknown or has a value outside what is allowed."""


class RunError(Exception):
  """Base of the run-level errors below."""


class WorkdirBusyError(RunError):
  """Another live process is writing the workdir."""


class WorkdirError(RunError):
  """The workdir cannot be created or written."""


class CheckpointError(RunError):
  """No checkpoint of the workdir can be restored."""


class DivergedError(RunError):
  """Training produced non-finite losses, gradients or parameters too many steps in a row."""
