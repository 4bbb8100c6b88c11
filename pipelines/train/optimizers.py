"""Optimizers and learning-rate schedules, the same for every training stage.

Every training stage (teacher, student, QAT) takes a :class:`TrainConfig`
and builds its optimizer with :func:`make_optimizer`, so a flag means the same
thing in every stage.
"""

from models.compat import keras, tf
from pipelines.config.errors import ConfigError
from pipelines.config.train import TrainConfig


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


def make_optimizer(config: TrainConfig, steps_per_epoch: int, keras_module=keras, lr=None):
  """Builds the optimizer ``config`` names, driven by :func:`make_schedule` (or ``lr``), from
  ``keras_module`` (tf_keras; Keras 3 for a Keras 3 student)."""
  lr = lr if lr is not None else make_schedule(config, steps_per_epoch)
  wd = config.weight_decay or None
  opt = keras_module.optimizers
  if config.optimizer == "adam":
    return opt.Adam(lr)
  if config.optimizer == "adamw":
    return opt.AdamW(lr, weight_decay=config.weight_decay)
  if config.optimizer == "sgd":
    return opt.SGD(lr, momentum=config.momentum, nesterov=True, weight_decay=wd)
  raise ConfigError("unknown optimizer %r" % config.optimizer)


def build_slots(optimizer, variables) -> None:
  """Creates ``optimizer``'s slot variables (momenta, Adam's moments) for ``variables`` now.

  Call it where the model was compiled (inside the strategy's scope). Left to Keras, the slots
  are created inside the first trace of the train step, and a ``tf.function`` that creates
  variables is traced a second time: on a pruned MobileNetV2 student that second trace cost as
  much as the first (9-10 s per training stage; BUILD_NOTES.md, "Pitfall: optimizer slots built
  inside the first trace"). The values are
  the same (zeros) either way.
  """
  optimizer.build(list(variables))
