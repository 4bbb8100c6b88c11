"""Shared training machinery: the training config, optimizers and learning-rate schedules.

Every training stage (teacher, student, QAT) takes a :class:`TrainConfig`
and builds its optimizer with :func:`make_optimizer`, so a flag means the same
thing in every stage.
"""

import contextlib
import copy
import sys

from pipelines.compat import keras, tf
from pipelines.configs import LR_SCHEDULES, MONITORS, OPTIMIZERS, TrainConfig  # noqa: F401
from pipelines.errors import ConfigError


@keras.saving.register_keras_serializable(package="kdprune")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warm-up from 0 to ``after(0)``, then ``after(step - warmup_steps)``.

  The wrapped schedule starts when warm-up ends, so the peak learning rate is
  the configured one and the decay spans the steps after warm-up.

  Example:
    >>> s = WarmupSchedule(keras.optimizers.schedules.ExponentialDecay(1.0, 10, 0.5), 4)
    >>> [round(float(s(i)), 3) for i in (0, 2, 4, 14)]
    [0.0, 0.5, 1.0, 0.5]
  """

  def __init__(self, after, warmup_steps: int):
    super().__init__()
    if warmup_steps < 0:
      raise ValueError("warmup_steps must be >= 0, got %r" % warmup_steps)
    if isinstance(after, dict):
      after = keras.optimizers.schedules.deserialize(after)
    self.after = after
    self.warmup_steps = int(warmup_steps)

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    if self.warmup_steps == 0:
      return tf.cast(self.after(step), tf.float32)
    warmup = float(self.warmup_steps)
    target = tf.cast(self.after(tf.maximum(step - warmup, 0.0)), tf.float32)
    ramp = tf.cast(self.after(0.0), tf.float32) * step / warmup
    return tf.where(step < warmup, ramp, target)

  def get_config(self):
    return {"after": keras.optimizers.schedules.serialize(self.after),
            "warmup_steps": self.warmup_steps}


@keras.saving.register_keras_serializable(package="kdprune")
class ConstantSchedule(keras.optimizers.schedules.LearningRateSchedule):
  """A constant learning rate as a schedule, so TensorBoard logs it like the others."""

  def __init__(self, learning_rate: float):
    super().__init__()
    self.learning_rate = float(learning_rate)

  def __call__(self, step):
    del step
    return tf.constant(self.learning_rate, tf.float32)

  def get_config(self):
    return {"learning_rate": self.learning_rate}


def make_schedule(config: TrainConfig, steps_per_epoch: int):
  """The learning-rate schedule for ``config`` over ``epochs * steps_per_epoch`` steps."""
  total = max(1, config.epochs * steps_per_epoch)
  warmup = int(round(config.warmup_epochs * steps_per_epoch))
  if config.lr_schedule == "constant":
    after = ConstantSchedule(config.learning_rate)
  elif config.lr_schedule == "cosine":
    after = keras.optimizers.schedules.CosineDecay(config.learning_rate,
                                                   decay_steps=max(1, total - warmup))
  elif config.lr_schedule == "exponential":
    after = keras.optimizers.schedules.ExponentialDecay(
        config.learning_rate, decay_steps=max(1, steps_per_epoch), decay_rate=config.lr_decay_rate)
  else:
    raise ConfigError("unknown learning-rate schedule %r" % config.lr_schedule)
  return WarmupSchedule(after, warmup) if warmup else after


def make_optimizer(config: TrainConfig, steps_per_epoch: int):
  """Builds the optimizer ``config`` names, driven by :func:`make_schedule`."""
  lr = make_schedule(config, steps_per_epoch)
  wd = config.weight_decay or None
  if config.optimizer == "adam":
    return keras.optimizers.Adam(lr)
  if config.optimizer == "adamw":
    return keras.optimizers.AdamW(lr, weight_decay=config.weight_decay)
  if config.optimizer == "sgd":
    return keras.optimizers.SGD(lr, momentum=config.momentum, nesterov=True, weight_decay=wd)
  raise ConfigError("unknown optimizer %r" % config.optimizer)


def keras_verbosity(progress: str) -> int:
  """Maps ``--progress`` (auto|bar|epoch|none) to Keras' ``verbose``."""
  return {"bar": 1, "epoch": 2, "none": 0}.get(progress, 1 if sys.stdout.isatty() else 2)


def evaluate_classifier(model, batches) -> dict:
  """Accuracy and mean cross-entropy of a logits ``model`` over ``(x, y)`` batches."""
  correct = total = 0
  loss_sum = 0.0
  for x, y in batches:
    logits = model(x, training=False)
    y = tf.cast(tf.reshape(y, [-1]), tf.int32)
    correct += int(tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), y),
                                         tf.int32)))
    loss_sum += float(tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=y, logits=tf.cast(logits, tf.float32))))
    total += int(y.shape[0])
  return {"accuracy": correct / max(1, total), "loss": loss_sum / max(1, total)}


def evaluate_regressor(model, batches, loss: str = "mse") -> dict:
  """MSE and MAE of a regression ``model`` over ``(x, y)`` batches; ``loss`` is the one named."""
  sq = ab = 0.0
  count = 0
  for x, y in batches:
    pred = tf.cast(model(x, training=False), tf.float32)
    diff = pred - tf.reshape(tf.cast(y, tf.float32), tf.shape(pred))
    sq += float(tf.reduce_sum(tf.square(diff)))
    ab += float(tf.reduce_sum(tf.abs(diff)))
    count += int(tf.size(diff))
  mse, mae = sq / max(1, count), ab / max(1, count)
  return {"mse": mse, "mae": mae, "loss": mse if loss == "mse" else mae}


def evaluate(model, batches, data_config) -> dict:
  """:func:`evaluate_classifier` or :func:`evaluate_regressor`, by ``data_config.task``."""
  if data_config.regression:
    return evaluate_regressor(model, batches, data_config.regression_loss)
  return evaluate_classifier(model, batches)


def compile_args(data_config) -> dict:
  """``loss`` and ``metrics`` for ``Model.compile`` of a plain (teacher) model of the data's task."""
  from pipelines import distill  # pylint: disable=g-import-not-at-top
  if data_config.regression:
    loss = (keras.losses.MeanSquaredError() if data_config.regression_loss == "mse"
            else keras.losses.MeanAbsoluteError())
  else:
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  return {"loss": loss, "metrics": [distill.task_metric(data_config.task,
                                                        data_config.regression_loss)]}


@contextlib.contextmanager
def precision(mixed: bool):
  """Keras' global dtype policy while a stage builds its models: ``mixed_float16`` or ``float32``.

  Layers keep the policy they were built with; ``compile`` then wraps the
  optimizer of a mixed-precision model in a ``LossScaleOptimizer``.
  """
  old = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
  try:
    yield
  finally:
    keras.mixed_precision.set_global_policy(old)


def to_float32(model):
  """``model`` if it computes in float32, else a float32 copy with the same weights.

  Saved models are float32 whatever the training precision, so that loading,
  QAT and TFLite conversion never meet float16 layers.
  """
  if all(getattr(l, "dtype_policy", None) is None or l.dtype_policy.name == "float32"
         for l in model.layers):
    return model
  config = copy.deepcopy(model.get_config())
  for layer in config["layers"]:
    if "dtype" in layer.get("config", {}) and layer["class_name"] != "InputLayer":
      layer["config"]["dtype"] = "float32"
  with precision(False):
    clone = model.__class__.from_config(config)
  clone.set_weights(model.get_weights())
  return clone

