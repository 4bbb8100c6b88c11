"""How one stage trains: optimizer, schedule, early stopping, precision. Imports no TensorFlow."""

import dataclasses
import math
from typing import Optional

from pipelines.config.base import SEED_RANGE, is_seed
from pipelines.config.errors import ConfigError

OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "cosine", "exponential")
MONITORS = ("val_loss", "val_accuracy")
AUGMENTATIONS = ("none", "shift", "flip_shift", "crop_flip")


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
    steps_per_execution: training steps per compiled call (Keras); larger
      values cut per-step dispatch overhead, which dominates small models.
    mixed_precision: build and train the models with Keras' ``mixed_float16``
      policy (float16 compute, float32 variables, dynamic loss scaling); saved
      models are float32.
    augment: training-input augmentation for image data: ``none``, ``shift``
      (random translation up to 10% of height and width, zero fill) or
      ``flip_shift`` (also random horizontal flips; not for digits or text) or ``crop_flip``
      (random resized crop + horizontal flip, for natural images).
    seed: seeds this stage's initialisation, shuffling, dropout and augmentation;
      ``None``: the data's ``--seed``. The validation split always follows
      ``--seed``, so students of one teacher can be repeated with other seeds.
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
  steps_per_execution: int = 16
  augment: str = "none"
  mixed_precision: bool = False
  seed: Optional[int] = None

  LATER_FIELDS = ("mixed_precision", "seed")  # see resolved()

  def seed_or(self, data_seed: int) -> int:
    """The seed this stage trains with: its own, else the data's ``--seed``."""
    return data_seed if self.seed is None else self.seed

  def validate(self, prefix: str, task: str = "classification") -> None:
    """Raises ConfigError naming the flag (``--<prefix>_<field>``) that is wrong.

    ``task`` is the data's (``--task``): regression has no accuracy to monitor.
    """
    def bad(field, why):
      shared = ("batch_size", "steps_per_execution")
      name = field if field in shared else "%s_%s" % (prefix, field)
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
    if task == "regression" and self.monitor != "val_loss":
      bad("monitor", "has no meaning for --task=regression (there is no accuracy); use val_loss "
          "(the validation --regression_loss, lower is better)")
    if self.min_delta < 0:
      bad("min_delta", "must be >= 0")
    if self.steps_per_execution < 1:
      bad("steps_per_execution", "must be >= 1")
    if self.augment not in AUGMENTATIONS:
      bad("augment", "is not one of %s" % ", ".join(AUGMENTATIONS))
    if self.seed is not None and not is_seed(self.seed):
      bad("seed", "must be in %s" % SEED_RANGE)
