"""Where decoded examples are kept between epochs: ``--cache=auto|memory|disk|none``.

* ``memory``: ``ds.cache()`` (the decoded split in RAM after the first pass);
* ``disk``: ``ds.cache(filename)``, a tf.data file cache under the run directory
  (``<workdir>/cache/data/<key>/<split>``), keyed by the data config and the source's
  identity (files, bytes, latest change), so changed data is never read from a stale cache;
* ``none``: every epoch reads and decodes again;
* ``auto``: ``memory`` when the decoded splits fit the budget (``--cache_budget_mb``, default
  ``min(2 GiB, RAM / 4)``), estimated as examples x decoded bytes per example, else ``disk``
  when a run directory is known (stages), else ``none``.

A validation split carved from train is a filter over the whole training stream; it is cached
even under ``none`` (in memory when it fits the budget, else on disk), or each validation pass
would read and decode the whole training split again.

Imports TensorFlow only inside the functions that build pipelines.
"""

import glob
import hashlib
import json
import logging
import os
from typing import Dict, Optional, Tuple

from pipelines.config import base
from pipelines.config.data import CACHE_MODES  # noqa: F401  (re-exported)
from pipelines.config.errors import ConfigError

_MAX_BUDGET = 2 << 30
_PER_TENSOR_OVERHEAD = 64  # bytes tf.data's memory cache adds per cached tensor, roughly
_STATE = {"root": None}


def set_root(path: Optional[str]) -> None:
  """The folder disk caches go under (stages set ``<workdir>/cache/data``); None: no disk cache."""
  _STATE["root"] = path


def root() -> Optional[str]:
  return _STATE["root"]


def default_budget_bytes() -> int:
  """``min(2 GiB, a quarter of the machine's RAM)``."""
  try:
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (ValueError, OSError, AttributeError):
    ram = 4 * _MAX_BUDGET
  return int(min(_MAX_BUDGET, ram // 4))


def budget_bytes(budget_mb: int) -> int:
  return int(budget_mb) << 20 if budget_mb else default_budget_bytes()


def example_bytes(element_spec) -> Optional[int]:
  """Decoded bytes of one example of ``element_spec`` (None when a shape is not fully known)."""
  from models.compat import tf  # pylint: disable=g-import-not-at-top
  total = 0
  for spec in tf.nest.flatten(element_spec):
    if not spec.shape.is_fully_defined():
      return None
    total += int(spec.shape.num_elements()) * spec.dtype.size + _PER_TENSOR_OVERHEAD
  return total


def _mib(n: int) -> str:
  return "%.1f MiB" % (n / float(1 << 20))


def choose(mode: str, split_bytes: Dict[str, Optional[int]], budget: int,
           have_root: bool) -> Tuple[str, str]:
  """The mode ``auto`` stands for here, and why, as ``(mode, reason)``."""
  if mode != "auto":
    return mode, "--cache=%s" % mode
  if any(v is None for v in split_bytes.values()):
    total = None
  else:
    total = sum(split_bytes.values())
  if total is not None and total <= budget:
    return "memory", "the decoded splits (%s) fit the budget (%s)" % (_mib(total), _mib(budget))
  size = "of unknown size" if total is None else "(%s) exceed the budget (%s)" % (
      _mib(total), _mib(budget))
  if have_root:
    return "disk", "the decoded splits %s: a file cache under the run directory" % size
  return "none", "the decoded splits %s and no run directory is set for a file cache" % size


def cache_key(config) -> str:
  """What the cached examples depend on: the data config and the source's identity on disk."""
  data = base.resolved(config)
  for field in ("cache", "cache_mode", "cache_budget_mb"):  # how, not what, is cached
    data.pop(field, None)
  text = json.dumps({"data": data, "source": config.source_identity()}, sort_keys=True,
                    default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_file(key: str, split: str) -> str:
  """The tf.data file cache prefix of ``split``; leftovers of an unfinished cache are removed
  (TensorFlow would refuse a stale lockfile), one per worker of a multi-worker run."""
  task = _task_suffix()
  folder = os.path.join(root(), key)
  os.makedirs(folder, exist_ok=True)
  prefix = os.path.join(folder, split + task)
  if not os.path.exists(prefix + ".index"):
    for path in glob.glob(glob.escape(prefix) + "*"):
      try:
        os.remove(path)
      except OSError:
        pass
  return prefix


def _task_suffix() -> str:
  try:
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
  except ValueError:
    return ""
  return "-%s%s" % (task["type"], task.get("index", 0)) if task.get("type") else ""


def apply(ds, mode: str, key: Optional[str], split: str):
  """``ds`` cached as ``mode`` says (``disk`` needs ``key`` and a root)."""
  if mode == "memory":
    return ds.cache()
  if mode == "disk":
    return ds.cache(cache_file(key, split))
  return ds


def cache_splits(config, splits: dict, counts: Dict[str, int],
                 carved: bool = False) -> Tuple[dict, str]:
  """Caches each split of ``splits`` as ``config`` asks; returns ``(splits, log line)``.

  ``carved``: the validation split is a filter over the training stream, cached even under
  ``none`` (see the module docstring).
  """
  budget = budget_bytes(getattr(config, "cache_budget_mb", 0))
  sizes = {}
  for name, ds in splits.items():
    per = example_bytes(ds.element_spec)
    sizes[name] = None if per is None else per * int(counts[name])
  mode, reason = choose(config.cache_policy, sizes, budget, root() is not None)
  if mode == "disk" and root() is None:
    raise ConfigError("--cache=disk needs a run directory (the stages set one under --workdir)")
  key = cache_key(config) if root() is not None else None
  out = {name: apply(ds, mode, key, name) for name, ds in splits.items()}
  line = "data cache: %s (%s)" % (mode, reason)
  if carved and mode == "none" and "validation" in splits:
    val = sizes.get("validation")
    val_mode = "memory" if val is not None and val <= budget else ("disk" if key else "none")
    out["validation"] = apply(splits["validation"], val_mode, key, "validation")
    line += "; the validation split carved from train: %s" % (
        val_mode if val_mode != "none" else "none (it re-reads the training split each pass)")
  logging.getLogger("kdprune").info("[data] %s", line)
  return out, line
