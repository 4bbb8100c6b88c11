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
CSV_PREFIX = "csv:"
SYNTHETIC_REGRESSION = "synthetic_regression"
NORMALIZATIONS = ("auto", "none", "standardize", "maxabs")
TASKS = ("classification", "regression")
REGRESSION_LOSSES = ("mse", "mae")
OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "cosine", "exponential")
MONITORS = ("val_loss", "val_accuracy")
PRUNING_METHODS = ("magnitude", "dynamic")
AUGMENTATIONS = ("none", "shift", "flip_shift")
SEED_RANGE = "[0, 2**32)"  # what numpy's and TensorFlow's global seeds accept


def is_seed(value: int) -> bool:
  """Whether ``value`` can seed every random generator a stage uses (see SEED_RANGE)."""
  return 0 <= value < 2**32


def resolved(config) -> dict:
  """``dataclasses.asdict(config)`` for manifests and fingerprints, minus the fields a config class
  lists in ``LATER_FIELDS`` while they hold their default.

  Fields added in a later kdprune version must not change the fingerprint of a
  run that does not use them, or upgrading would retrain every finished stage.
  """
  out = dataclasses.asdict(config)
  for field in getattr(config, "LATER_FIELDS", ()):
    default = type(config).__dataclass_fields__[field].default
    if getattr(config, field) == default:
      out.pop(field, None)
  return out


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the data comes from and how it is split and normalised.

  Attributes:
    dataset: ``digits`` (embedded default), a TFDS name such as ``mnist`` or
      ``cifar10`` (optionally ``name/config:version``), ``npz:/path/file.npz``,
      ``csv:/path/file.csv`` (numeric columns, one of them ``target_column``) or
      ``synthetic_regression[:n_samples=...,n_features=...,n_informative=...,noise=...,seed=...]``
      (scikit-learn's ``make_regression``, reimplemented in numpy).
    data_dir: TFDS data directory (``None``: TFDS' default, ``~/tensorflow_datasets``).
    validation_fraction: share of train held out for validation when the source
      has no validation split; in (0, 1).
    seed: seeds the validation carve-out, the training shuffle and initialisation.
    normalization: ``auto`` (uint8 -> [0, 1]; CSV features standardized; other
      inputs as they are), ``none``, ``standardize`` (per-channel / per-feature
      mean and std fitted on train) or ``maxabs`` (each feature divided by its
      largest absolute value on train).
    image_size: ``(height, width)`` to resize images to, required for TFDS
      datasets whose images vary in size; ``None`` keeps the stored size.
    num_classes: for ``.npz`` sources, the number of classes (``None``: max label + 1).
    train_examples: use only the first N training examples (0: all); for smoke runs.
    cache: keep decoded examples in memory after the first epoch.
    task: ``classification`` (integer labels, logits out) or ``regression``
      (real-valued targets, one output per target).
    regression_loss: ``mse`` or ``mae``: the loss every stage trains on and
      early-stops by for ``regression`` (both are reported).
    target_column: the CSV column holding the label or target.
    test_fraction: share of a single-table source (``csv:``,
      ``synthetic_regression``) held out as the test split (seeded by ``seed``).
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
  task: str = "classification"
  regression_loss: str = "mse"
  target_column: Optional[str] = None
  test_fraction: float = 0.2

  LATER_FIELDS = ("task", "regression_loss", "target_column", "test_fraction")  # see resolved()

  @property
  def npz_path(self) -> Optional[str]:
    return self.dataset[len(NPZ_PREFIX):] if self.dataset.startswith(NPZ_PREFIX) else None

  @property
  def csv_path(self) -> Optional[str]:
    return self.dataset[len(CSV_PREFIX):] if self.dataset.startswith(CSV_PREFIX) else None

  @property
  def is_synthetic(self) -> bool:
    return self.dataset.split(":", 1)[0] == SYNTHETIC_REGRESSION

  @property
  def regression(self) -> bool:
    return self.task == "regression"

  def validate(self) -> None:
    """Raises ConfigError for values that can be judged without touching data."""
    if not self.dataset:
      raise ConfigError("--dataset is empty; use digits, a TFDS name, npz:/path/file.npz, "
                        "csv:/path/file.csv or synthetic_regression")
    if self.npz_path == "":
      raise ConfigError("--dataset=npz: needs a path, e.g. npz:/data/my_data.npz")
    if self.csv_path == "":
      raise ConfigError("--dataset=csv: needs a path, e.g. csv:/data/my_data.csv")
    if not is_seed(self.seed):
      raise ConfigError("--seed=%s must be in %s" % (self.seed, SEED_RANGE))
    if self.task not in TASKS:
      raise ConfigError("--task=%s is not one of %s" % (self.task, ", ".join(TASKS)))
    if self.regression_loss not in REGRESSION_LOSSES:
      raise ConfigError("--regression_loss=%s is not one of %s" % (
          self.regression_loss, ", ".join(REGRESSION_LOSSES)))
    if self.csv_path is not None and not self.target_column:
      raise ConfigError("--dataset=csv:%s needs --target_column=<name of the label/target "
                        "column>" % self.csv_path)
    if self.target_column and self.csv_path is None:
      raise ConfigError("--target_column is for --dataset=csv:...; %s has its own labels" % (
          self.dataset,))
    single_table = self.csv_path is not None or self.is_synthetic
    if not 0.0 < self.test_fraction < 1.0:
      raise ConfigError("--test_fraction=%s must be in (0, 1)" % self.test_fraction)
    if self.test_fraction != 0.2 and not single_table:
      raise ConfigError("--test_fraction is for csv: and synthetic_regression datasets; %s has "
                        "its own test split" % self.dataset)
    if self.is_synthetic and not self.regression:
      raise ConfigError("--dataset=%s is a regression dataset; pass --task=regression" % (
          self.dataset,))
    tabular = single_table or self.npz_path is not None
    if self.normalization == "maxabs" and not tabular:
      raise ConfigError("--normalization=maxabs is for arrays (npz:, csv:, synthetic_regression); "
                        "use standardize for --dataset=%s" % self.dataset)
    if self.regression and not tabular:
      raise ConfigError("--task=regression needs tabular data: npz:/path/file.npz, "
                        "csv:/path/file.csv or synthetic_regression; --dataset=%s is none of "
                        "them (TFDS datasets are read as classification)" % self.dataset)
    if self.regression and self.num_classes is not None:
      raise ConfigError("--num_classes is for classification; --task=regression has one output "
                        "per target")
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
    for kind, value in (("npz", self.npz_path), ("csv", self.csv_path)):
      if value is None:
        continue
      path = os.path.abspath(value)
      try:
        st = os.stat(path)
        return {kind: path, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
      except OSError:
        return {kind: path, "missing": True}
    if self.is_synthetic:
      return {"synthetic": self.dataset}
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
    steps_per_execution: training steps per compiled call (Keras); larger
      values cut per-step dispatch overhead, which dominates small models.
    mixed_precision: build and train the models with Keras' ``mixed_float16``
      policy (float16 compute, float32 variables, dynamic loss scaling); saved
      models are float32.
    augment: training-input augmentation for image data: ``none``, ``shift``
      (random translation up to 10% of height and width, zero fill) or
      ``flip_shift`` (also random horizontal flips; not for digits or text).
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


def headline(task: str) -> Tuple[str, str, bool]:
  """The metric that ranks models of ``task``: ``(key, label, higher_is_better)``.

  ``key`` is the suffix of the ``test_<key>`` / ``val_<key>`` entries stages write.
  """
  return ("mse", "MSE", False) if task == "regression" else ("accuracy", "accuracy", True)


def task_of(metrics: dict) -> str:
  """The task a stage's metrics (or a report's model entry) were measured for."""
  return "regression" if "test_mse" in metrics else "classification"


def describe_result(metrics: dict, split: str = "test") -> str:
  """``test accuracy 0.9833`` or ``test MSE 0.01234 (MAE 0.0876)`` for a stage's metrics."""
  if task_of(metrics) == "regression":
    return "%s MSE %.5g (MAE %.4g)" % (split, metrics["%s_mse" % split],
                                      metrics["%s_mae" % split])
  return "%s accuracy %.4f" % (split, metrics["%s_accuracy" % split])


def split_metrics(val: dict, test: dict) -> dict:
  """``{"test_<name>": ..., "val_<name>": ...}`` for every figure of two evaluations."""
  out = {"test_%s" % k: float(v) for k, v in test.items() if k != "examples"}
  out.update({"val_%s" % k: float(v) for k, v in val.items() if k != "examples"})
  return out


TEACHER_OUTPUTS = ("auto", "cached", "online")
PRUNING_SCHEDULES = ("polynomial_decay", "constant")
PRUNING_STRUCTURES = ("unstructured", "m_by_n", "channels")


@dataclasses.dataclass(frozen=True)
class DistillConfig:
  """The distillation loss.

  ``total = (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))
  + alpha * cross_entropy(labels, student)``; with ``enabled=False`` the
  student learns from the labels alone (the ablation).

  Attributes:
    enabled: learn from the teacher (``--distill``).
    temperature: T > 0; softens both distributions.
    alpha: weight of the hard-label loss, in [0, 1].
    teacher_outputs: ``cached`` (teacher logits computed once over the
      training set and carried with the batches), ``online`` (the teacher
      runs in every step, in inference mode) or ``auto`` (cached, since
      the student's inputs are not augmented; online when they are).
  """

  enabled: bool = True
  temperature: float = 4.0
  alpha: float = 0.1
  teacher_outputs: str = "auto"

  def validate(self) -> None:
    if not (self.temperature > 0 and math.isfinite(self.temperature)):
      raise ConfigError("--temperature=%s must be > 0" % self.temperature)
    if not 0.0 <= self.alpha <= 1.0:
      raise ConfigError("--alpha=%s must be in [0, 1]" % self.alpha)
    if self.teacher_outputs not in TEACHER_OUTPUTS:
      raise ConfigError("--teacher_outputs=%s is not one of %s" % (
          self.teacher_outputs, ", ".join(TEACHER_OUTPUTS)))

  def check_task(self, task: str) -> None:
    """Regression distils without a temperature: refuse one that was set to something else."""
    if task == "regression" and self.enabled and self.temperature != DistillConfig.temperature:
      raise ConfigError("--temperature=%s does not apply to --task=regression: the student "
                        "learns alpha * loss(labels) + (1 - alpha) * loss(teacher predictions) "
                        "(--alpha); drop --temperature" % self.temperature)

  def resolved_for(self, task: str) -> dict:
    """:func:`resolved` without the temperature where it does not apply (regression)."""
    out = resolved(self)
    if task == "regression":
      out.pop("temperature", None)
    return out

  def check_augment(self, augment: str, flag: str) -> None:
    """Cached teacher outputs belong to the unaugmented inputs: refuse them with augmentation."""
    if augment != "none" and self.enabled and self.teacher_outputs == "cached":
      raise ConfigError("--teacher_outputs=cached with %s=%s: cached teacher outputs belong to "
                        "the unaugmented inputs; use online (or auto)" % (flag, augment))

  def resolved_teacher_outputs(self, augmented: bool = False) -> str:
    if self.teacher_outputs == "auto":
      return "online" if augmented else "cached"
    return self.teacher_outputs


def parse_layer_sparsity(items) -> Tuple[Tuple[str, float], ...]:
  """``["logits:0.97", "conv_2_2:0.95"]`` -> ``(("logits", 0.97), ("conv_2_2", 0.95))``."""
  out = []
  for item in items or ():
    name, sep, value = str(item).rpartition(":")
    try:
      if not sep or not name:
        raise ValueError
      out.append((name, float(value)))
    except ValueError:
      raise ConfigError("--pruning_layer_sparsity=%s must be layer:sparsity, e.g. logits:0.97" % (
          item,)) from None
  names = [n for n, _ in out]
  if len(set(names)) != len(names):
    raise ConfigError("--pruning_layer_sparsity names a layer twice: %s" % ", ".join(names))
  return tuple(out)


def parse_step_or_fraction(value: str, flag: str):
  """``"500"`` -> ``("steps", 500)``; ``"0.25"`` or ``"25%"`` -> ``("fraction", 0.25)``."""
  text = str(value).strip()
  try:
    if text.endswith("%"):
      kind, number = "fraction", float(text[:-1]) / 100.0
    elif any(c in text for c in ".eE"):
      kind, number = "fraction", float(text)
    else:
      kind, number = "steps", int(text)
  except ValueError:
    raise ConfigError("--%s=%s must be a step (500) or a fraction of the planned training "
                      "(0.25 or 25%%)" % (flag, value)) from None
  if kind == "fraction" and not 0.0 <= number <= 1.0:
    raise ConfigError("--%s=%s: a fraction of the planned training must be in [0, 1]" % (
        flag, value))
  if kind == "steps" and number < 0:
    raise ConfigError("--%s=%s must be >= 0" % (flag, value))
  return kind, number


@dataclasses.dataclass(frozen=True)
class PruningConfig:
  """Gradual magnitude pruning (tfmot) of the student.

  Attributes:
    schedule: ``polynomial_decay`` (S = S_f + (S_0 - S_f)(1 - (t - t_0)/(t_e - t_0))^exponent)
      or ``constant`` (S_f from ``begin`` on).
    initial_sparsity, final_sparsity: S_0 and S_f, in [0, 1). ``final_sparsity``
      ``None`` means 0.9 (unstructured) or m/n (m_by_n).
    exponent: the polynomial's exponent (3 in Zhu & Gupta 2017 and tfmot).
    frequency: prune every this many steps; 0 picks a tenth of an epoch (1..100).
    begin, end: when the schedule starts and reaches ``final_sparsity``, as a
      step (``"500"``) or a fraction of the planned training (``"0.1"``, ``"75%"``).
    structure: ``unstructured``, ``m_by_n`` (m zeros in every n weights,
      e.g. 2:4, for sparse tensor cores) or ``channels`` (whole Conv2D filters
      and Dense units removed and the model rebuilt smaller; see
      :mod:`pipelines.channels`).
    m_by_n: (m, n) for ``m_by_n``.
    keep_dense: layer names or class names left dense; ``auto`` keeps layers with
      fewer than ``MIN_PRUNABLE_WEIGHTS`` kernel weights (pruning them saves
      nothing and costs accuracy).
    layer_sparsity: ``((layer name, final sparsity), ...)``: layers that end at
      their own final sparsity instead of ``final_sparsity`` (same schedule
      shape and steps). Unstructured pruning only.
    method: ``magnitude`` (tfmot: a pruned weight stays pruned) or ``dynamic``
      (the same schedule, and every ``mask_update_every`` steps the smallest
      active weights are dropped and as many pruned ones regrown where the loss
      gradient is largest, as in RigL, Evci et al. 2020; see
      :mod:`pipelines.dynamic`). Unstructured pruning only.
    mask_update_every: steps between two mask revisions (``dynamic``).
    drop_fraction: share of the active weights revised at the first revision;
      it decays to 0 along a cosine (RigL's alpha = 0.3).
    mask_update_end: when revisions stop (RigL's T_end = 0.75 of training), a
      step or a fraction of the planned training.
    channel_fraction: share of the units of each shrinkable layer removed by the
      end of the schedule (``channels``). With ``channels`` and a ``final_sparsity``
      above 0 the shrunk student is then pruned by tfmot (shrink, then sparsify).
  """

  schedule: str = "polynomial_decay"
  initial_sparsity: float = 0.0
  final_sparsity: Optional[float] = None
  exponent: float = 3.0
  frequency: int = 0
  begin: str = "0.1"
  end: str = "0.75"
  structure: str = "unstructured"
  m_by_n: Tuple[int, int] = (2, 4)
  keep_dense: Tuple[str, ...] = ("auto",)
  layer_sparsity: Tuple[Tuple[str, float], ...] = ()
  method: str = "magnitude"
  mask_update_every: int = 100
  drop_fraction: float = 0.3
  mask_update_end: str = "0.75"
  channel_fraction: float = 0.5

  MIN_PRUNABLE_WEIGHTS = 512
  LATER_FIELDS = ("layer_sparsity", "method", "mask_update_every", "drop_fraction",
                  "mask_update_end", "channel_fraction")  # see resolved()

  def target_for(self, layer: str) -> float:
    """The final sparsity of ``layer``: its own from ``layer_sparsity``, else :attr:`target`."""
    return dict(self.layer_sparsity).get(layer, self.target)

  @property
  def target(self) -> float:
    """The sparsity every pruned layer ends at."""
    if self.structure == "m_by_n":
      return self.m_by_n[0] / float(self.m_by_n[1])
    if self.structure == "channels":  # zeros only when sparsified after shrinking
      return float(self.final_sparsity or 0.0)
    return 0.9 if self.final_sparsity is None else float(self.final_sparsity)

  def validate(self) -> None:
    if self.schedule not in PRUNING_SCHEDULES:
      raise ConfigError("--pruning_schedule=%s is not one of %s" % (
          self.schedule, ", ".join(PRUNING_SCHEDULES)))
    if self.structure not in PRUNING_STRUCTURES:
      raise ConfigError("--pruning_structure=%s is not one of %s" % (
          self.structure, ", ".join(PRUNING_STRUCTURES)))
    for name in ("initial_sparsity", "final_sparsity"):
      value = getattr(self, name)
      if value is not None and not 0.0 <= value < 1.0:
        raise ConfigError("--%s=%s must be in [0, 1)" % (name, value))
    if self.structure == "m_by_n":
      m, n = self.m_by_n
      if not 0 < m < n:
        raise ConfigError("--m_by_n=%d:%d needs 0 < m < n" % (m, n))
      if self.final_sparsity is not None and abs(self.final_sparsity - m / n) > 1e-9:
        raise ConfigError("--final_sparsity=%s does not match --m_by_n=%d:%d, which prunes "
                          "exactly %g; drop --final_sparsity" % (self.final_sparsity, m, n, m / n))
    elif self.structure == "channels":
      if not 0.0 < self.channel_fraction < 1.0:
        raise ConfigError("--channel_fraction=%s must be in (0, 1)" % self.channel_fraction)
      if self.initial_sparsity > (self.final_sparsity or 0.0):
        raise ConfigError("--initial_sparsity=%s is above --final_sparsity=%s" % (
            self.initial_sparsity, self.final_sparsity or 0.0))
    elif self.initial_sparsity > self.target:
      raise ConfigError("--initial_sparsity=%s is above --final_sparsity=%s" % (
          self.initial_sparsity, self.target))
    if self.layer_sparsity and self.structure != "unstructured":
      raise ConfigError("--pruning_layer_sparsity works with --pruning_structure=unstructured only")
    for layer, value in self.layer_sparsity:
      if not 0.0 <= value < 1.0:
        raise ConfigError("--pruning_layer_sparsity=%s:%s must be in [0, 1)" % (layer, value))
      if value < self.initial_sparsity:
        raise ConfigError("--pruning_layer_sparsity=%s:%s is below --initial_sparsity=%s" % (
            layer, value, self.initial_sparsity))
    if self.method not in PRUNING_METHODS:
      raise ConfigError("--pruning_method=%s is not one of %s" % (
          self.method, ", ".join(PRUNING_METHODS)))
    if self.method == "dynamic":
      if self.structure != "unstructured":
        raise ConfigError("--pruning_method=dynamic works with --pruning_structure=unstructured "
                          "only (an m:n pattern or removed channels leave no weights to regrow)")
      if self.mask_update_every < 1:
        raise ConfigError("--mask_update_every=%s must be >= 1" % self.mask_update_every)
      if not 0.0 < self.drop_fraction < 1.0:
        raise ConfigError("--drop_fraction=%s must be in (0, 1)" % self.drop_fraction)
      parse_step_or_fraction(self.mask_update_end, "mask_update_end")
    if not (self.exponent > 0 and math.isfinite(self.exponent)):
      raise ConfigError("--pruning_exponent=%s must be > 0" % self.exponent)
    if self.frequency < 0:
      raise ConfigError("--pruning_frequency=%s must be >= 0 (0: a tenth of an epoch)" % (
          self.frequency,))
    b = parse_step_or_fraction(self.begin, "pruning_begin")
    e = parse_step_or_fraction(self.end, "pruning_end")
    if b[0] == e[0] and e[1] <= b[1] and self.schedule == "polynomial_decay":
      raise ConfigError("--pruning_end=%s must come after --pruning_begin=%s" % (
          self.end, self.begin))

  def resolve_steps(self, steps_per_epoch: int, epochs: int) -> dict:
    """Turns begin/end/frequency into training steps for this data and epoch count.

    tfmot counts steps from 1 and updates masks at steps t in [begin, end] with
    ``(t - begin) % frequency == 0``; if ``end - begin`` is not a multiple of the
    frequency the final sparsity is never applied. So ``end`` is moved down onto
    that grid, and a schedule that does not finish within the planned
    ``epochs * steps_per_epoch`` steps is refused (tfmot #973, #975).

    Returns:
      ``{"begin_step", "end_step", "frequency", "final_step", "planned_steps"}``;
      ``final_step`` is the first step at which every pruned layer holds the
      final sparsity.
    """
    planned = steps_per_epoch * epochs

    def to_step(spec, flag):
      kind, number = parse_step_or_fraction(spec, flag)
      return int(round(number * planned)) if kind == "fraction" else int(number)

    frequency = self.frequency or max(1, min(100, steps_per_epoch // 10))
    begin = to_step(self.begin, "pruning_begin")
    if self.schedule == "constant" or self.structure == "m_by_n":
      # One mask update at the first pruning step applies the target.
      first = begin if begin >= 1 else frequency * -(-(1 - begin) // frequency) + begin
      end = first
    else:
      end = to_step(self.end, "pruning_end")
      if end > planned:
        raise ConfigError(
            "pruning schedule reaches its final sparsity at step %d (--pruning_end=%s) but "
            "training plans only %d steps (%d epochs x %d steps); lower --pruning_end or raise "
            "the epochs" % (end, self.end, planned, epochs, steps_per_epoch))
      k = (end - begin) // frequency
      if k < 1:
        raise ConfigError(
            "pruning schedule: --pruning_end (step %d) must be at least one --pruning_frequency "
            "(%d steps) after --pruning_begin (step %d)" % (end, frequency, begin))
      end = begin + k * frequency
      if end < 1:
        raise ConfigError("pruning schedule ends before the first training step")
    if end > planned:
      raise ConfigError(
          "pruning schedule reaches its final sparsity at step %d but training plans only %d "
          "steps (%d epochs x %d steps); lower --pruning_end/--pruning_begin or raise the epochs"
          % (end, planned, epochs, steps_per_epoch))
    steps = {"begin_step": begin, "end_step": end, "frequency": frequency, "final_step": end,
             "planned_steps": planned}
    if self.method == "dynamic":
      stop = to_step(self.mask_update_end, "mask_update_end")
      if stop > planned:
        raise ConfigError("--mask_update_end=%s is step %d, after the %d planned steps (%d epochs x "
                          "%d steps)" % (self.mask_update_end, stop, planned, epochs,
                                         steps_per_epoch))
      first = max(begin, 1)
      if stop - first < self.mask_update_every:
        raise ConfigError(
            "--mask_update_end=%s (step %d) leaves no mask revision after --pruning_begin (step "
            "%d) at --mask_update_every=%d; raise --mask_update_end or lower --mask_update_every"
            % (self.mask_update_end, stop, begin, self.mask_update_every))
      steps.update({"mask_update_every": self.mask_update_every, "mask_update_end": stop})
    return steps
