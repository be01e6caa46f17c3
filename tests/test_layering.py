"""The package's import graph, read from its source (no import runs): no circle between
modules or between folders, no jaxvae import inside a function, and every import points down
the layering of docs/ARCHITECTURE.md."""

import ast
import collections
import os

import pytest

from conftest import ROOT

PACKAGE = os.path.join(ROOT, "jaxvae")

# Low to high, as docs/ARCHITECTURE.md draws it: a module may import from its own layer's
# modules (without circles) and from any layer below, never from one above. The root modules
# other than `main` are the base every layer uses.
LAYERS = (
  ("errors", "faults", "workdir", "multihost"),
  ("config",),
  ("audio", "symbolic", "text"),
  ("data",),
  ("models",),
  ("losses",),
  ("variants",),
  ("training",),
  ("sampling",),
  ("evaluators",),
  ("modes", "api"),
  ("main",),
)
# The package's facade (`jaxvae.load`) imports `jaxvae.api` on first use, so that importing
# `jaxvae.errors` or the command line does not import the whole library.
LAZY = {"jaxvae": {"jaxvae.api"}}
LEVEL = {name: i for i, names in enumerate(LAYERS) for name in names}


def _module_name(path: str) -> str:
  rel = os.path.relpath(path, ROOT)[: -len(".py")].replace(os.sep, ".")
  return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _resolve(name: str, modules: set) -> str:
  """`jaxvae.a.b` (a module, or a name inside one) -> the module it loads."""
  while name not in modules and "." in name:
    name = name.rpartition(".")[0]
  return name


def _imports(path: str, modules: set) -> list[tuple[str, int, bool]]:
  """(imported jaxvae module, line, at top level) for every import of `path`."""
  tree = ast.parse(open(path, encoding="utf-8").read(), path)
  top = {id(node) for node in tree.body}
  out = []
  for node in ast.walk(tree):
    names = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      names = [f"{node.module}.{a.name}" for a in node.names]
    for name in names:
      if name == "jaxvae" or name.startswith("jaxvae."):
        out.append((_resolve(name, modules), node.lineno, id(node) in top))
  return out


def _graph():
  paths = [
    os.path.join(d, f) for d, _, files in os.walk(PACKAGE) for f in files if f.endswith(".py")
  ]
  modules = {_module_name(p) for p in paths}
  return {_module_name(p): (p, _imports(p, modules)) for p in paths}


GRAPH = _graph()


def _group(module: str) -> str:
  """`jaxvae.training.loop` -> 'training'; a root module -> its own name."""
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else "jaxvae"


def test_every_folder_and_root_module_has_a_layer():
  unplaced = {_group(m) for m in GRAPH} - set(LEVEL) - {"jaxvae", "__init__"}
  assert not unplaced, f"add {sorted(unplaced)} to LAYERS and docs/ARCHITECTURE.md"


def test_no_jaxvae_import_inside_a_function():
  inner = [
    f"{os.path.relpath(path, ROOT)}:{line} imports {target}"
    for path, imports in GRAPH.values()
    for target, line, at_top in imports
    if not at_top and target not in LAZY.get(_module_name(path), ())
  ]
  assert not inner, "\n".join(inner)


def test_imports_point_down_the_layers():
  upward = []
  for module, (path, imports) in GRAPH.items():
    here = LEVEL.get(_group(module))
    for target, line, _ in imports:
      there = LEVEL.get(_group(target))
      if here is not None and there is not None and there > here:
        upward.append(
          f"{os.path.relpath(path, ROOT)}:{line} ({_group(module)}) imports "
          f"{target} ({_group(target)}, a higher layer)"
        )
  assert not upward, "\n".join(upward)


def _cycles(edges: dict) -> list[list[str]]:
  """The strongly connected components with more than one node (Tarjan)."""
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in edges.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for v in sorted(edges):
    if v not in index:
      visit(v)
  return found


@pytest.mark.parametrize("level", ["module", "folder"])
def test_no_import_circles(level):
  edges = collections.defaultdict(set)
  for module, (_, imports) in GRAPH.items():
    for target, _, _ in imports:
      a, b = (module, target) if level == "module" else (_group(module), _group(target))
      if a != b and not (level == "folder" and "jaxvae" in (a, b)):
        edges[a].add(b)
  assert not _cycles(edges), _cycles(edges)


def test_the_checks_can_fail():
  """The cycle finder and the layer table see what they must (a guard on the guards)."""
  assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
  assert LEVEL["training"] > LEVEL["variants"] > LEVEL["models"] > LEVEL["data"]
  assert _group("jaxvae.training.loop") == "training" and _group("jaxvae.errors") == "errors"
