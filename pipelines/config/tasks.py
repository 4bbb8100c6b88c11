"""What each task (classification, regression) is judged by, and how results read. No TensorFlow."""

from typing import Tuple


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
