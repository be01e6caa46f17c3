"""The datasets a run reads: `data.sources` (several, in one store) or `data.layout` +
`data.root` (one).

`data.sources` is a tuple of dicts, e.g. HarmonicVAE's combined set:

    config.data.sources = (
      dict(name="gtzan", layout="gtzan", root="/data/gtzan", weight=1.0),
      dict(name="maestro", layout="maestro", root="/data/maestro", weight=0.5),
      dict(name="mine", layout="folder", root="/data/mine", weight=1.0, label_prefix="mine:"),
    )

Keys of a source: `layout` and `root` (required; `root` may be empty for `demo`), `name`
(default: the layout; unique), `weight` (its share of each training epoch; give all sources
one or none: without weights an epoch is every example once, so shares follow the sizes),
`label_prefix` (put before each of its label values, so that a folder's 'jazz' and GTZAN's
'jazz' stay two classes; default '': equal values are one class). Every source is featurized
with the run's one feature setting into one store; each keeps its own split (the layout's, or
the seeded hash); every example also gets the label `source`.
"""

from __future__ import annotations

import dataclasses

from jaxvae.errors import ConfigError

SOURCE_KEYS = ("name", "layout", "root", "weight", "label_prefix")
AUDIO_LAYOUTS = ("demo", "gtzan", "maestro", "speech_commands", "folder", "manifest")


@dataclasses.dataclass(frozen=True)
class Source:
  name: str
  layout: str
  root: str
  weight: float | None = None  # None: the epoch is a plain shuffle of every example
  label_prefix: str = ""

  @property
  def weight_given(self) -> bool:
    return self.weight is not None


def of_config(config) -> list[Source]:
  """The run's sources: `data.sources` when set, else one source from `data.layout` and
  `data.root` (named by its layout, no weight, no prefix). Raises ConfigError naming the key."""
  d = config.data
  if not d.sources:
    return [Source(name=d.layout, layout=d.layout, root=d.root)]
  if d.kind != "audio":
    raise ConfigError(
      f"config key 'data.sources' is set with data.kind '{d.kind}'; several sources are "
      "featurized into one audio feature store (data.kind 'audio')"
    )
  if d.root:
    raise ConfigError(
      "config keys 'data.sources' and 'data.root' are both set; give each source its own "
      "root in data.sources and leave data.root empty"
    )
  out, names = [], set()
  for i, raw in enumerate(d.sources):
    key = f"data.sources[{i}]"
    if not isinstance(raw, dict):
      raise ConfigError(f"config key '{key}' is {raw!r}; expected a dict with layout and root")
    unknown = sorted(set(raw) - set(SOURCE_KEYS))
    if unknown:
      raise ConfigError(
        f"config key '{key}' has unknown key(s) {', '.join(unknown)}; "
        f"expected some of {', '.join(SOURCE_KEYS)}"
      )
    layout = raw.get("layout")
    if layout not in AUDIO_LAYOUTS:
      raise ConfigError(
        f"config key '{key}.layout' is {layout!r}; expected one of {', '.join(AUDIO_LAYOUTS)}"
      )
    root = raw.get("root", "")
    if not isinstance(root, str) or (layout != "demo" and not root):
      raise ConfigError(f"config key '{key}.root' is {root!r}; expected the dataset's path")
    weight = raw.get("weight")
    bad = isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0
    if weight is not None and bad:
      raise ConfigError(f"config key '{key}.weight' is {weight!r}; expected a number > 0")
    name = raw.get("name", layout)
    if not isinstance(name, str) or not name or "/" in name:
      raise ConfigError(f"config key '{key}.name' is {name!r}; expected a name without '/'")
    if name in names:
      raise ConfigError(
        f"config key '{key}.name' is {name!r}, the name of an earlier source; give each "
        "source its own name"
      )
    prefix = raw.get("label_prefix", "")
    if not isinstance(prefix, str):
      raise ConfigError(f"config key '{key}.label_prefix' is {prefix!r}; expected a string")
    names.add(name)
    out.append(Source(name, layout, root, None if weight is None else float(weight), prefix))
  given = [s.weight_given for s in out]
  if any(given) and not all(given):
    missing = ", ".join(f"data.sources[{i}]" for i, g in enumerate(given) if not g)
    raise ConfigError(
      f"config key 'data.sources' gives some sources a weight but not {missing}; give every "
      "source a weight (its share of each epoch) or none (every example once per epoch)"
    )
  return out


def is_combined(config) -> bool:
  return bool(config.data.sources)
