"""Loading `configs/<name>.py[:preset]`, command-line overrides, and sibling configs.

`load` checks the keys every run has (`jaxvae.config.checks`); a variant's own keys are checked
by its module (`jaxvae.variants.registry.check`), which callers run after loading.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import importlib.util
import os
import sys
from typing import Any

import ml_collections

from jaxvae.config import checks as checks_lib
from jaxvae.config.base import get_path
from jaxvae.errors import ConfigError


def _load_module(path: str):
  if not os.path.isfile(path):
    raise ConfigError(f"config file '{path}' does not exist")
  spec = importlib.util.spec_from_file_location(
    "jaxvae_config_" + os.path.basename(path)[:-3], path
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file '{path}' defines no get_config()")
  return module


def parse_value(text: str, current: Any) -> Any:
  """Turns an override's text into the type of the value it replaces."""
  if isinstance(current, bool):
    if text.lower() in ("true", "1", "yes"):
      return True
    if text.lower() in ("false", "0", "no"):
      return False
    raise ValueError("expected true or false")
  if isinstance(current, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    raise ValueError(f"expected {_kind(current)}") from None
  if isinstance(current, float) and isinstance(value, int):
    value = float(value)
  if isinstance(current, tuple) and isinstance(value, list):
    value = tuple(value)
  if current is not None and type(value) is not type(current):
    raise ValueError(f"expected {_kind(current)}")
  return value


def _kind(value) -> str:
  return {
    int: "an integer",
    float: "a number",
    tuple: "a tuple such as (1, 2)",
    list: "a list such as [1, 2]",
  }.get(type(value), f"a {type(value).__name__}")


class Parser(argparse.ArgumentParser):
  """argparse, but a command-line mistake is one line on stderr and exit status 1, as a
  config mistake is (argparse's own: its usage text, then the error, status 2)."""

  def error(self, message):
    print(f"error: {message}; {self.prog} --help lists the flags", file=sys.stderr)
    raise SystemExit(1)


def overrides_from_args(parser, tokens: list[str]) -> dict[str, str]:
  """`--config.a.b=value` tokens left over by argparse -> {'a.b': 'value'}; anything else is
  reported through `parser.error` (`Parser`'s: one line, exit status 1)."""
  overrides = {}
  for token in tokens:
    if not token.startswith("--config.") or "=" not in token:
      parser.error(
        f"unrecognized argument '{token}' (config overrides look like --config.train.epochs=3)"
      )
    key, value = token[len("--config.") :].split("=", 1)
    overrides[key] = value
  return overrides


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, str]) -> None:
  """Sets `a.b=value` overrides on a locked config; unknown keys are errors."""
  for dotted, text in overrides.items():
    parent_path, _, leaf = dotted.rpartition(".")
    try:
      parent = get_path(config, parent_path) if parent_path else config
      current = parent[leaf]
    except (KeyError, AttributeError, TypeError):
      raise ConfigError(f"unknown config key '{dotted}'{_suggest(config, dotted)}") from None
    if isinstance(current, ml_collections.ConfigDict):
      raise ConfigError(
        f"config key '{dotted}' is a group; set one of its keys: "
        f"{', '.join(sorted(current.keys()))}"
      )
    try:
      value = parse_value(text, current)
    except (ValueError, SyntaxError) as e:
      raise ConfigError(f"config key '{dotted}' is {text!r}; {e}") from None
    with parent.unlocked():
      parent[leaf] = value


def _all_keys(config, prefix=""):
  for k, v in config.items():
    path = f"{prefix}{k}"
    if isinstance(v, ml_collections.ConfigDict):
      yield from _all_keys(v, path + ".")
    else:
      yield path


def _suggest(config, dotted: str) -> str:
  close = difflib.get_close_matches(dotted, list(_all_keys(config)), n=3, cutoff=0.6)
  return f"; did you mean {' or '.join(close)}?" if close else ""


def load(spec: str, overrides: dict[str, str] | None = None) -> ml_collections.ConfigDict:
  """Loads `path[:preset]`, applies overrides, checks the keys every run has, and returns a
  locked config. `jaxvae.variants.registry.load_config` adds the variant's own checks: use
  that one to run a config."""
  path, _, arg = spec.partition(":")
  module = _load_module(path)
  try:
    config = module.get_config(arg or None)
  except KeyError as e:
    raise ConfigError(f"config file '{path}': {e.args[0]}") from None
  apply_overrides(config, overrides or {})
  checks_lib.validate(config)
  config.lock()
  return config


def sibling(config_file: str, name: str, arg: str | None) -> ml_collections.ConfigDict:
  """The config of another file in the same folder, unlocked, so a variant config can be
  written as that config plus a few changes instead of a copy."""
  module = _load_module(os.path.join(os.path.dirname(os.path.abspath(config_file)), name))
  config = module.get_config(arg)
  config.unlock()
  return config
