"""TensorBoard and log writers shared by every stage, and the non-finite-loss guard.

Layout under a stage directory ``<workdir>/<stage>/``::

  tb/               HParams session (the stage's flags) + final metrics
  tb/train/         Keras: epoch_loss, epoch_accuracy, epoch_learning_rate, graph
  tb/validation/    Keras: epoch_loss, epoch_accuracy
  metrics.jsonl     one JSON line per epoch (the same numbers, for scripts)

``tensorboard --logdir <workdir>`` shows every stage side by side.
"""

import json
import math
import os
from typing import Dict, Mapping

from models.compat import keras, tf
from pipelines.config.errors import StageError

try:  # the hparams plugin ships with tensorboard, a dependency of tensorflow
  from tensorboard.plugins.hparams import api as hp
except ImportError:  # pragma: no cover
  hp = None


def tensorboard_callback(tb_dir: str) -> keras.callbacks.Callback:
  """Keras' TensorBoard callback: per-epoch scalars, learning rate and the model graph."""
  return keras.callbacks.TensorBoard(
      log_dir=tb_dir, histogram_freq=0, write_graph=True, update_freq="epoch", profile_batch=0)


def hparam_value(value):
  """Coerces a config value to a type the HParams plugin accepts (bool, int, float, str)."""
  if isinstance(value, (bool, int, float, str)):
    return value
  if value is None:
    return "none"
  if isinstance(value, (list, tuple)):
    return ",".join(str(v) for v in value)
  return str(value)


def flatten(config: Mapping, prefix: str = "") -> Dict[str, object]:
  """``{"a": {"b": 1}} -> {"a.b": 1}`` with values made HParams-safe."""
  out = {}
  for key, value in config.items():
    name = "%s.%s" % (prefix, key) if prefix else str(key)
    if isinstance(value, Mapping):
      out.update(flatten(value, name))
    else:
      out[name] = hparam_value(value)
  return out


def write_hparams(tb_dir: str, trial_id: str, hparams: Mapping, metrics: Mapping[str, float]) -> None:
  """Writes an HParams session (``hparams``) and its final ``metrics`` as scalars.

  No experiment config is written: TensorBoard infers one from all sessions
  under the logdir, so the stages of a run (and the runs of a sweep) with
  different hyperparameters show side by side.
  """
  writer = tf.summary.create_file_writer(tb_dir)
  with writer.as_default():
    if hp is not None:
      hp.hparams(dict(flatten(hparams)), trial_id=trial_id)
    for name, value in metrics.items():
      if isinstance(value, (int, float)) and math.isfinite(value):
        tf.summary.scalar(name, float(value), step=0)
  writer.flush()
  writer.close()


def final_metrics(metrics: Mapping, extra=()) -> Dict[str, float]:
  """``{"final/test_accuracy", "final/val_accuracy"}`` (classification) or the test and
  validation MSE and MAE (regression) of a stage's ``metrics``, plus the keys in ``extra``."""
  keys = ("accuracy",) if "test_accuracy" in metrics else ("mse", "mae")
  names = ["%s_%s" % (split, k) for split in ("test", "val") for k in keys] + list(extra)
  return {"final/" + n: metrics[n] for n in names if n in metrics}


def write_text(tb_dir: str, tag: str, markdown: str, step: int = 0) -> None:
  """A markdown text summary (tables render in TensorBoard's Text tab)."""
  writer = tf.summary.create_file_writer(tb_dir)
  with writer.as_default():
    tf.summary.text(tag, markdown, step=step)
  writer.flush()
  writer.close()


class MetricsLogger(keras.callbacks.Callback):
  """Appends ``{"epoch": e, <logs>}`` as one JSON line per epoch to ``path``."""

  def __init__(self, path: str):
    super().__init__()
    self.path = path

  def on_train_begin(self, logs=None):
    os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)

  def on_epoch_end(self, epoch, logs=None):
    record = {"epoch": int(epoch) + 1}
    for k, v in (logs or {}).items():
      try:
        record[k] = float(v)
      except (TypeError, ValueError):
        continue
    lr = _current_lr(self.model)
    if lr is not None:
      record["learning_rate"] = lr
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")


class NonFiniteGuard(keras.callbacks.Callback):
  """Stops training with a :class:`StageError` as soon as the loss is NaN or infinite.

  Keras' own ``TerminateOnNaN`` only stops quietly, after which a stage would
  save garbage. This names the stage, the step and the learning rate.
  """

  def __init__(self, stage: str, lr_flag: str):
    super().__init__()
    self.stage = stage
    self.lr_flag = lr_flag
    self._epoch = 0

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch

  def on_train_batch_end(self, batch, logs=None):
    loss = (logs or {}).get("loss")
    if loss is None:
      return
    loss = float(loss)
    if not math.isfinite(loss):
      step = int(self.model.optimizer.iterations.numpy()) if self.model.optimizer else batch
      lr = _current_lr(self.model)
      raise StageError(
          self.stage,
          "loss is %s at step %d (epoch %d, batch %d); training diverged: lower %s "
          "(learning rate there: %s) or check the inputs for extreme values"
          % (loss, step, self._epoch + 1, batch + 1, self.lr_flag,
             "%.3g" % lr if lr is not None else "unknown"))


def _current_lr(model):
  opt = getattr(model, "optimizer", None)
  if opt is None:
    return None
  try:
    lr = opt.learning_rate
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
      lr = lr(opt.iterations)
    return float(tf.convert_to_tensor(lr).numpy())
  except Exception:  # pylint: disable=broad-except
    return None
