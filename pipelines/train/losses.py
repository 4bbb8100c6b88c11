"""Distillation losses as pure functions of logits (Hinton, Vinyals & Dean 2015), and for
regression of predictions (:func:`regression_distillation_loss`: no temperature).

  total = (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))
          + alpha * cross_entropy(labels, softmax(student))

The T^2 factor keeps the soft term's gradients on the same scale as the hard
term's when T changes. All functions return per-batch means.

Example:
  >>> import numpy as np
  >>> s = np.array([[2.0, 0.0]], np.float32); t = np.array([[0.0, 2.0]], np.float32)
  >>> parts = distillation_loss(s, t, np.array([1]), temperature=1.0, alpha=0.0)
  >>> round(float(parts["total"]), 4)   # KL of two swapped 2-logit softmaxes
  1.5232
"""

from models.compat import tf


def soft_kl(student_logits, teacher_logits, temperature: float):
  """Mean over the batch of KL(softmax(teacher/T) || softmax(student/T)), without the T^2."""
  t = tf.cast(temperature, tf.float32)
  log_p_teacher = tf.nn.log_softmax(tf.cast(teacher_logits, tf.float32) / t, axis=-1)
  log_p_student = tf.nn.log_softmax(tf.cast(student_logits, tf.float32) / t, axis=-1)
  kl = tf.reduce_sum(tf.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1)
  return tf.reduce_mean(kl)


def hard_cross_entropy(labels, student_logits):
  """Mean sparse categorical cross-entropy of integer ``labels`` under ``student_logits``."""
  labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
  return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=labels, logits=tf.cast(student_logits, tf.float32)))


def distillation_loss(student_logits, teacher_logits, labels, temperature: float, alpha: float):
  """The distillation objective and its parts.

  Returns:
    ``{"total", "distill", "hard"}``: ``distill`` is ``T^2 * KL`` (before the
    ``1 - alpha`` weight), ``hard`` the cross-entropy with the labels (before
    ``alpha``), and ``total = (1 - alpha) * distill + alpha * hard``.
  """
  distill = (temperature ** 2) * soft_kl(student_logits, teacher_logits, temperature)
  hard = hard_cross_entropy(labels, student_logits)
  total = (1.0 - alpha) * distill + alpha * hard
  return {"total": total, "distill": distill, "hard": hard}


# ----------------------------------------------------------------------------
# Regression: the student learns from the teacher's predictions, no temperature.


def regression_error(targets, predictions, loss: str = "mse"):
  """Mean squared (``mse``) or absolute (``mae``) error over the batch and the targets."""
  diff = tf.cast(predictions, tf.float32) - tf.reshape(
      tf.cast(targets, tf.float32), tf.shape(predictions))
  if loss == "mse":
    return tf.reduce_mean(tf.square(diff))
  if loss == "mae":
    return tf.reduce_mean(tf.abs(diff))
  raise ValueError("unknown regression loss %r (mse or mae)" % loss)


def regression_distillation_loss(student_predictions, teacher_predictions, labels, alpha: float,
                                 loss: str = "mse"):
  """``alpha * loss(labels, student) + (1 - alpha) * loss(teacher, student)`` and its parts.

  Returns:
    ``{"total", "distill", "hard"}`` as :func:`distillation_loss` does:
    ``distill`` is the loss to the teacher's predictions, ``hard`` to the labels.

  Example:
    >>> import numpy as np
    >>> s, t, y = (np.array([[v]], np.float32) for v in (1.0, 3.0, 0.0))
    >>> parts = regression_distillation_loss(s, t, y, alpha=0.25)
    >>> [round(float(parts[k]), 4) for k in ("hard", "distill", "total")]
    [1.0, 4.0, 3.25]
  """
  hard = regression_error(labels, student_predictions, loss)
  distill = regression_error(tf.stop_gradient(teacher_predictions), student_predictions, loss)
  total = alpha * hard + (1.0 - alpha) * distill
  return {"total": total, "distill": distill, "hard": hard}
