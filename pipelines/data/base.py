"""A checked data source, and the seeded carve-outs every source shares. Imports no TensorFlow."""

import dataclasses
from typing import Any, Optional, Tuple

import numpy as np

from pipelines.config.errors import ConfigError


@dataclasses.dataclass
class Source:
  """A checked data source."""

  kind: str  # "tfds", "npz", "csv", "synthetic" or "images"
  input_shape: Tuple[int, ...]
  num_classes: int
  input_dtype: np.dtype
  builder: Any = None  # tfds.core.DatasetBuilder, for kind == "tfds"
  input_key: Optional[str] = None
  label_key: Optional[str] = None
  splits: Tuple[str, ...] = ()
  roles: Optional[dict] = None  # TFDS: role (train/validation/test) -> split spec read for it
  files: Optional[dict] = None  # images: split -> (paths, int32 labels)
  records: Optional[dict] = None  # tfrecord: {"files", "counts", "form", "label_dtype"}
  arrays: Optional[dict] = None  # for the array sources (npz, csv, synthetic)
  feature_names: Optional[Tuple[str, ...]] = None  # CSV feature columns, in the model's order
  class_names: Optional[Tuple[str, ...]] = None  # TFDS ClassLabel names / image class folders


def carve_size(n: int, fraction: float) -> int:
  """How many of ``n`` training examples :func:`carve_indices` holds out."""
  if n < 2:
    raise ConfigError("cannot carve a validation split from %d training example(s)" % n)
  return min(n - 1, max(1, int(round(n * fraction))))


def carve_indices(n: int, fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
  """Deterministic seeded split of ``range(n)``: returns sorted ``(train_idx, val_idx)``.

  The validation part has ``round(n * fraction)`` examples (at least 1 and at
  most ``n - 1``). The same ``(n, fraction, seed)`` always gives the same split.
  """
  n_val = carve_size(n, fraction)
  perm = np.random.default_rng(seed).permutation(n)
  return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def first_line(e: Exception) -> str:
  """The first line of an exception's message (for one-line errors)."""
  text = str(e).strip()
  return text.splitlines()[0] if text else type(e).__name__
