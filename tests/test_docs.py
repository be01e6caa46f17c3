"""The docs stay in step with the code: every config key, mode, config file and docs page that
README.md or docs/*.md names exists."""

import glob
import os
import re

import pytest

from conftest import ROOT
from jaxvae import main as main_lib
from jaxvae.config import loading

PAGES = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
GROUPS = ("train", "data", "model", "eval", "kl", "generate", "tune", "objective")
# `--config.a.b=`, and backticked dotted keys of the config groups (`train.max_runtime`).
KEY = re.compile(r"--config\.([\w.]+)=|`((?:" + "|".join(GROUPS) + r")\.[a-z_][\w.]*)`")
# Dotted names of the same shape that are not config keys: the run file's `data` fields
# (docs/ARCHITECTURE.md, "The Python API") and a loaded model's attribute.
NOT_KEYS = {"data.shape", "data.stats", "data.params", "data.label_values", "model.config"}


def _is_module_path(name: str) -> bool:
  """`data.store.publish`: a function of `jaxvae/data/store.py`, not a key."""
  group, _, rest = name.partition(".")
  return os.path.isfile(os.path.join(ROOT, "jaxvae", group, rest.split(".")[0] + ".py"))


def _flat(config, prefix=""):
  for key, value in config.items():
    if hasattr(value, "items"):
      yield f"{prefix}{key}"
      yield from _flat(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}"


def _all_keys() -> set[str]:
  """Every key of every config file's default and small presets."""
  keys = set()
  for path in glob.glob(os.path.join(ROOT, "configs", "*.py")):
    for preset in ("", ":small"):
      keys |= set(_flat(loading.load(path + preset)))
  return keys


@pytest.fixture(scope="module")
def keys():
  return _all_keys()


@pytest.mark.parametrize("page", PAGES, ids=os.path.basename)
def test_config_keys_named_in_the_docs_exist(page, keys):
  text = open(page, encoding="utf-8").read()
  named = {a or b for a, b in KEY.findall(text)} - NOT_KEYS
  missing = sorted(k for k in named if k.rstrip(".") not in keys and not _is_module_path(k))
  assert not missing, f"{os.path.basename(page)} names config keys that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=os.path.basename)
def test_modes_configs_and_pages_named_in_the_docs_exist(page):
  text = open(page, encoding="utf-8").read()
  modes = set(re.findall(r"--mode=([a-z]\w*)", text))
  assert modes <= set(main_lib.MODES), sorted(modes - set(main_lib.MODES))
  configs = set(re.findall(r"configs/(\w+\.py)", text))
  assert all(os.path.isfile(os.path.join(ROOT, "configs", c)) for c in configs), configs
  links = re.findall(r"\]\(((?:docs/)?[A-Z]+\.md)\)", text)
  base = os.path.dirname(page)
  assert all(os.path.isfile(os.path.join(base, link)) for link in links), links


def test_the_readme_stays_short():
  """The README is what a new user needs; the reference is in docs/ (no table cell longer
  than a few lines)."""
  text = open(PAGES[0], encoding="utf-8").read()
  assert len(text) < 12_000
  cells = [c for line in text.splitlines() if line.startswith("|") for c in line.split("|")]
  assert max(map(len, cells)) < 300
