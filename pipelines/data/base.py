"""The data-source protocol: a :class:`SourceKind` per kind of ``--dataset``, the checked
:class:`Source` it resolves, the raw splits its tf.data builder gives (:class:`Read`), and the
one seeded validation carve every kind shares (:func:`plan`). Imports no TensorFlow."""

import abc
import dataclasses
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from pipelines.config.data import IMAGES_PREFIX, DataConfig
from pipelines.config.errors import ConfigError


@dataclasses.dataclass
class Source:
  """A checked data source; ``payload`` is what its kind keeps for reading it (the arrays, the
  files per split, the records, the TFDS builder)."""

  kind: "SourceKind"
  input_shape: Tuple[int, ...]
  num_classes: int
  input_dtype: np.dtype
  payload: Any = None
  feature_names: Optional[Tuple[str, ...]] = None  # CSV feature columns, in the model's order
  class_names: Optional[Tuple[str, ...]] = None  # TFDS ClassLabel names / image class folders
  # How kdprune made the test split of a source that has none of its own (:func:`carved_test`);
  # None: the source's own test split.
  test_source: Optional[str] = None


@dataclasses.dataclass
class Read:
  """A kind's tf.data pipelines of raw examples, before the shared carve, resize, cache and
  normalisation of :func:`pipelines.data.bundle.load`."""

  splits: Dict[str, Any]  # "train" (all of it), "test", and "validation" when the source has one
  sizes: Dict[str, int]  # the examples of each
  validation_source: str = "validation split"  # what the source's own validation split is
  # Sorted positions of train -> those examples; None: a filter over the training stream.
  pick: Optional[Callable] = None
  # The training inputs as an array (array kinds): statistics and the input range come from its
  # rows; None: statistics are fitted on the cached train split.
  x_train: Optional[np.ndarray] = None
  file_shards: Dict[str, int] = dataclasses.field(default_factory=dict)  # split -> files read


class UnknownSource(ConfigError):
  """A ``--dataset`` no kind knows; :func:`pipelines.data.sources.resolve` adds every kind."""


class SourceKind(abc.ABC):
  """One kind of ``--dataset``: the values it claims, its checks (:meth:`resolve`), the examples
  it holds per split (:meth:`split_sizes`) and its tf.data builder (:meth:`read`).

  ``resolve`` and ``split_sizes`` import no TensorFlow; ``read`` imports it when called.
  """

  name = ""  # the bundle's ``source``, e.g. "npz"
  prefix = ""  # the --dataset prefix it claims
  usage = ""  # how the message that lists every kind names it
  seeded = False  # its test split is carved from one table with --seed
  auto_normalization = "auto"  # what --normalization=auto means for it

  def claims(self, dataset: str) -> bool:
    return dataset.startswith(self.prefix)

  @abc.abstractmethod
  def resolve(self, config: DataConfig) -> Source:
    """Checks the source: every problem a one-line ConfigError naming the flag or file."""

  @abc.abstractmethod
  def split_sizes(self, source: Source) -> Optional[Dict[str, int]]:
    """The examples the source holds: train, test, and validation when it has its own; None when
    it records no counts."""

  @abc.abstractmethod
  def read(self, source: Source, config: DataConfig) -> Read:
    """The tf.data pipelines of the source's raw examples."""


def carved_test(what: str, config: DataConfig) -> str:
  """The record of a test split kdprune held out of ``what`` itself (:attr:`Source.test_source`):
  a teacher trained elsewhere may have seen its examples."""
  return "carved by kdprune from %s (--test_fraction=%g, --seed=%d)" % (
      what, config.test_fraction, config.seed)


def own_test_split(dataset: str) -> str:
  """How to give ``--dataset`` a test split of its own, one a teacher trained elsewhere on the
  rest never saw."""
  if dataset.startswith(IMAGES_PREFIX):
    return ("lay the folder out as DIR/train/<class>/... and DIR/test/<class>/..., the teacher "
            "trained on train/ only")
  return ("an .npz with x_train/y_train and x_test/y_test, the teacher trained on x_train only "
          "(--dataset=npz:FILE)")


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


def plan(sizes: Dict[str, int], config: DataConfig):
  """Examples per split as loaded from a source holding ``sizes`` (see
  :meth:`SourceKind.split_sizes`), with the positions of train that the train and validation
  splits take: without a validation split of its own one is carved from train
  (:func:`carve_indices`; ``None`` when the source has one); train keeps its first
  ``--train_examples``. ``split_sizes`` and ``load`` both count with it.
  """
  n = sizes["train"]
  if "validation" in sizes:
    train, validation = np.arange(n), None
  else:
    train, validation = carve_indices(n, config.validation_fraction, config.seed)
  if config.train_examples:
    train = train[:config.train_examples]
  counts = {"train": len(train), "test": sizes["test"],
            "validation": sizes["validation"] if validation is None else len(validation)}
  return {k: int(counts[k]) for k in ("train", "validation", "test")}, train, validation


def first_line(e: Exception) -> str:
  """The first line of an exception's message (for one-line errors)."""
  text = str(e).strip()
  return text.splitlines()[0] if text else type(e).__name__
