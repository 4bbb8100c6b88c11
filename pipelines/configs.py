"""Config dataclasses shared by the stages. Imports no TensorFlow.

Each config validates what can be judged from its values alone and raises
:class:`pipelines.errors.ConfigError` with one line naming the flag.
"""

import dataclasses
import math
import os
from typing import Optional, Tuple

from pipelines.errors import ConfigError

DEFAULT_DATASET = "digits"
NPZ_PREFIX = "npz:"
NORMALIZATIONS = ("auto", "none", "standardize")
OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "cosine", "exponential")
MONITORS = ("val_loss", "val_accuracy")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the data comes from and how it is split and normalised.

  Attributes:
    dataset: ``digits`` (embedded default), a TFDS name such as ``mnist`` or
      ``cifar10`` (optionally ``name/config:version``), or ``npz:/path/file.npz``.
    data_dir: TFDS data directory (``None``: TFDS' default, ``~/tensorflow_datasets``).
    validation_fraction: share of train held out for validation when the source
      has no validation split; in (0, 1).
    seed: seeds the validation carve-out, the training shuffle and initialisation.
    normalization: ``auto`` (uint8 -> [0, 1], other inputs as they are), ``none``,
      or ``standardize`` (per-channel / per-feature mean and std fitted on train).
    image_size: ``(height, width)`` to resize images to, required for TFDS
      datasets whose images vary in size; ``None`` keeps the stored size.
    num_classes: for ``.npz`` sources, the number of classes (``None``: max label + 1).
    train_examples: use only the first N training examples (0: all); for smoke runs.
    cache: keep decoded examples in memory after the first epoch.
  """

  dataset: str = DEFAULT_DATASET
  data_dir: Optional[str] = None
  validation_fraction: float = 0.1
  seed: int = 0
  normalization: str = "auto"
  image_size: Optional[Tuple[int, int]] = None
  num_classes: Optional[int] = None
  train_examples: int = 0
  cache: bool = True

  @property
  def npz_path(self) -> Optional[str]:
    return self.dataset[len(NPZ_PREFIX):] if self.dataset.startswith(NPZ_PREFIX) else None

  def validate(self) -> None:
    """Raises ConfigError for values that can be judged without touching data."""
    if not self.dataset:
      raise ConfigError("--dataset is empty; use digits, a TFDS name, or npz:/path/file.npz")
    if self.npz_path == "":
      raise ConfigError("--dataset=npz: needs a path, e.g. npz:/data/my_data.npz")
    if not 0.0 < self.validation_fraction < 1.0:
      raise ConfigError("--validation_fraction=%s must be in (0, 1)" % self.validation_fraction)
    if self.normalization not in NORMALIZATIONS:
      raise ConfigError("--normalization=%s is not one of %s" % (
          self.normalization, ", ".join(NORMALIZATIONS)))
    if self.image_size is not None and (len(self.image_size) != 2 or min(self.image_size) < 1):
      raise ConfigError("--image_size=%s must be two positive integers, e.g. 32,32" % (
          ",".join(map(str, self.image_size)),))
    if self.num_classes is not None and self.num_classes < 2:
      raise ConfigError("--num_classes=%s must be at least 2" % self.num_classes)
    if self.train_examples < 0:
      raise ConfigError("--train_examples=%s must be >= 0 (0 means all)" % self.train_examples)

  def source_identity(self) -> dict:
    """What identifies the data on disk, for fingerprints (a changed file reruns stages)."""
    if self.npz_path is not None:
      path = os.path.abspath(self.npz_path)
      try:
        st = os.stat(path)
        return {"npz": path, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
      except OSError:
        return {"npz": path, "missing": True}
    return {"tfds": self.dataset,
            "data_dir": os.path.abspath(self.data_dir) if self.data_dir else None}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """How one stage trains.

  Attributes:
    epochs: maximum number of epochs (early stopping may end sooner).
    batch_size: global batch size (split across replicas under a distribution strategy).
    optimizer: ``adam``, ``adamw`` or ``sgd`` (Nesterov momentum).
    learning_rate: peak learning rate.
    lr_schedule: ``constant``, ``cosine`` (to 0 over the planned steps after
      warm-up) or ``exponential`` (``lr_decay_rate`` per epoch).
    lr_decay_rate: per-epoch factor for ``exponential``.
    warmup_epochs: linear warm-up from 0 over this many epochs (may be fractional).
    weight_decay: decoupled weight decay (AdamW, SGD); 0 for none.
    momentum: SGD momentum.
    patience: epochs without improvement of ``monitor`` before stopping; 0 disables
      early stopping (the best epoch is still restored).
    monitor: ``val_loss`` or ``val_accuracy``; the best epoch by this is restored.
    min_delta: smallest change of ``monitor`` that counts as an improvement.
  """

  epochs: int = 20
  batch_size: int = 64
  optimizer: str = "adam"
  learning_rate: float = 1e-3
  lr_schedule: str = "cosine"
  lr_decay_rate: float = 0.9
  warmup_epochs: float = 0.0
  weight_decay: float = 0.0
  momentum: float = 0.9
  patience: int = 5
  monitor: str = "val_loss"
  min_delta: float = 0.0

  def validate(self, prefix: str) -> None:
    """Raises ConfigError naming the flag (``--<prefix>_<field>``) that is wrong."""
    def bad(field, why):
      name = "batch_size" if field == "batch_size" else "%s_%s" % (prefix, field)
      raise ConfigError("--%s=%s %s" % (name, getattr(self, field), why))
    if self.epochs < 1:
      bad("epochs", "must be >= 1")
    if self.batch_size < 1:
      bad("batch_size", "must be >= 1")
    if self.optimizer not in OPTIMIZERS:
      bad("optimizer", "is not one of %s" % ", ".join(OPTIMIZERS))
    if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
      bad("learning_rate", "must be a positive number")
    if self.lr_schedule not in LR_SCHEDULES:
      bad("lr_schedule", "is not one of %s" % ", ".join(LR_SCHEDULES))
    if not 0 < self.lr_decay_rate <= 1:
      bad("lr_decay_rate", "must be in (0, 1]")
    if not 0 <= self.warmup_epochs < self.epochs:
      bad("warmup_epochs", "must be >= 0 and less than the epochs (%d)" % self.epochs)
    if self.weight_decay < 0:
      bad("weight_decay", "must be >= 0")
    if not 0 <= self.momentum < 1:
      bad("momentum", "must be in [0, 1)")
    if self.patience < 0:
      bad("patience", "must be >= 0 (0 disables early stopping)")
    if self.monitor not in MONITORS:
      bad("monitor", "is not one of %s" % ", ".join(MONITORS))
    if self.min_delta < 0:
      bad("min_delta", "must be >= 0")
