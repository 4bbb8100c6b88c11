"""Distillation losses as pure functions of logits (Hinton, Vinyals & Dean 2015), and for
regression of predictions (:func:`regression_distillation_loss`: no temperature).

  total = (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))
          + alpha * cross_entropy(labels, softmax(student))

The T^2 factor keeps the soft term's gradients on the same scale as the hard
term's when T changes. Every loss is computed per example (the ``*_per_example`` functions, and
``per_example=True`` of :func:`distillation_loss` / :func:`regression_distillation_loss`, which
the trainer uses: it divides the replicas' sums by the global batch's size); the others return
the batch's mean.

The teacher's side may also come as its top-k logits and a *rest bucket*
(``--teacher_topk``, :mod:`pipelines.train.teacher_store`): ``values = [z_K, r]`` with
``r = T * logsumexp(z_rest / T)`` and ``classes = K``. Then p is the teacher's distribution over
the k + 1 outcomes "class k_1", ..., "class k_k", "any other class", ``p = softmax(values / T)``
(exact: the top-k probabilities and the rest's total mass at T), q is the student's
distribution over the same outcomes, ``log q_i = s_i / T - logsumexp(s / T)`` for i in K and
``log q_rest = logsumexp(s_rest / T) - logsumexp(s / T)``, and the soft term is
``T^2 * KL(p || q)`` over those k + 1 outcomes. With k = C - 1 (the rest is one class) it is the
full KL exactly; with fewer classes it is the KL of the coarsened distributions, at most the
full KL (the data-processing inequality): the student is pulled towards the teacher's top-k
probabilities and the total it leaves to the rest, not towards how the rest is spread.

Example:
  >>> import numpy as np
  >>> s = np.array([[2.0, 0.0]], np.float32); t = np.array([[0.0, 2.0]], np.float32)
  >>> parts = distillation_loss(s, t, np.array([1]), temperature=1.0, alpha=0.0)
  >>> round(float(parts["total"]), 4)   # KL of two swapped 2-logit softmaxes
  1.5232
"""

from models.compat import tf


def soft_kl_per_example(student_logits, teacher_logits, temperature: float):
  """``[B]``: KL(softmax(teacher/T) || softmax(student/T)) of each example, without the T^2."""
  t = tf.cast(temperature, tf.float32)
  log_p_teacher = tf.nn.log_softmax(tf.cast(teacher_logits, tf.float32) / t, axis=-1)
  log_p_student = tf.nn.log_softmax(tf.cast(student_logits, tf.float32) / t, axis=-1)
  return tf.reduce_sum(tf.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1)


def soft_kl(student_logits, teacher_logits, temperature: float):
  """Mean over the batch of :func:`soft_kl_per_example`."""
  return tf.reduce_mean(soft_kl_per_example(student_logits, teacher_logits, temperature))


def soft_kl_topk_per_example(student_logits, teacher_values, teacher_classes, temperature: float):
  """``[B]``: the KL over the teacher's top-k classes and one rest bucket, without the T^2 (see
  the module docstring): ``teacher_values`` ``[B, k + 1]`` (the top-k logits, then the rest
  bucket), ``teacher_classes`` ``[B, k]`` (their class ids)."""
  t = tf.cast(temperature, tf.float32)
  s = tf.cast(student_logits, tf.float32) / t
  classes = tf.cast(teacher_classes, tf.int32)
  lse = tf.reduce_logsumexp(s, axis=-1, keepdims=True)
  log_q_top = tf.gather(s, classes, batch_dims=1) - lse
  picked = tf.reduce_sum(tf.one_hot(classes, tf.shape(s)[-1], dtype=tf.float32), axis=1) > 0
  log_q_rest = tf.reduce_logsumexp(tf.where(picked, tf.constant(-float("inf")), s), axis=-1,
                                   keepdims=True) - lse
  log_q = tf.concat([log_q_top, log_q_rest], axis=-1)
  log_p = tf.nn.log_softmax(tf.cast(teacher_values, tf.float32) / t, axis=-1)
  return tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)


def hard_cross_entropy_per_example(labels, student_logits):
  """``[B]``: sparse categorical cross-entropy of integer ``labels`` under ``student_logits``."""
  labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
  return tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=labels, logits=tf.cast(student_logits, tf.float32))


def hard_cross_entropy(labels, student_logits):
  """Mean over the batch of :func:`hard_cross_entropy_per_example`."""
  return tf.reduce_mean(hard_cross_entropy_per_example(labels, student_logits))


def _reduced(parts: dict, per_example: bool) -> dict:
  return parts if per_example else {k: tf.reduce_mean(v) for k, v in parts.items()}


def distillation_loss(student_logits, teacher_logits, labels, temperature: float, alpha: float,
                      per_example: bool = False):
  """The distillation objective and its parts.

  Returns:
    ``{"total", "distill", "hard"}``: ``distill`` is ``T^2 * KL`` (before the
    ``1 - alpha`` weight), ``hard`` the cross-entropy with the labels (before
    ``alpha``), and ``total = (1 - alpha) * distill + alpha * hard``; the batch's means, or
    with ``per_example`` one value per example (``[B]`` each). ``teacher_logits`` is
    ``[B, C]`` logits, or a ``(values, classes)`` pair in the top-k form (module docstring).
  """
  if isinstance(teacher_logits, (tuple, list)):
    kl = soft_kl_topk_per_example(student_logits, teacher_logits[0], teacher_logits[1],
                                  temperature)
  else:
    kl = soft_kl_per_example(student_logits, teacher_logits, temperature)
  distill = (temperature ** 2) * kl
  hard = hard_cross_entropy_per_example(labels, student_logits)
  total = (1.0 - alpha) * distill + alpha * hard
  return _reduced({"total": total, "distill": distill, "hard": hard}, per_example)


# ----------------------------------------------------------------------------
# Regression: the student learns from the teacher's predictions, no temperature.


def regression_error_per_example(targets, predictions, loss: str = "mse"):
  """``[B]``: squared (``mse``) or absolute (``mae``) error of each example, averaged over its
  targets."""
  diff = tf.cast(predictions, tf.float32) - tf.reshape(
      tf.cast(targets, tf.float32), tf.shape(predictions))
  if loss == "mse":
    error = tf.square(diff)
  elif loss == "mae":
    error = tf.abs(diff)
  else:
    raise ValueError("unknown regression loss %r (mse or mae)" % loss)
  return tf.reduce_mean(error, axis=tf.range(1, tf.rank(error)))  # [B] stays [B]; [0, k] -> [0]


def regression_error(targets, predictions, loss: str = "mse"):
  """Mean squared (``mse``) or absolute (``mae``) error over the batch and the targets."""
  return tf.reduce_mean(regression_error_per_example(targets, predictions, loss))


def regression_distillation_loss(student_predictions, teacher_predictions, labels, alpha: float,
                                 loss: str = "mse", per_example: bool = False):
  """``alpha * loss(labels, student) + (1 - alpha) * loss(teacher, student)`` and its parts.

  Returns:
    ``{"total", "distill", "hard"}`` as :func:`distillation_loss` does (``per_example`` too):
    ``distill`` is the loss to the teacher's predictions, ``hard`` to the labels.

  Example:
    >>> import numpy as np
    >>> s, t, y = (np.array([[v]], np.float32) for v in (1.0, 3.0, 0.0))
    >>> parts = regression_distillation_loss(s, t, y, alpha=0.25)
    >>> [round(float(parts[k]), 4) for k in ("hard", "distill", "total")]
    [1.0, 4.0, 3.25]
  """
  hard = regression_error_per_example(labels, student_predictions, loss)
  distill = regression_error_per_example(tf.stop_gradient(teacher_predictions),
                                         student_predictions, loss)
  total = alpha * hard + (1.0 - alpha) * distill
  return _reduced({"total": total, "distill": distill, "hard": hard}, per_example)


def top_class_agreement_per_example(teacher_logits, student_logits):
  """``[B]`` float: 1 where the student's top class is the teacher's (``teacher_logits`` as in
  :func:`distillation_loss`: the first of the top-k classes in the top-k form)."""
  top = (teacher_logits[1][:, 0] if isinstance(teacher_logits, (tuple, list))
         else tf.argmax(teacher_logits, axis=-1))
  return tf.cast(tf.equal(tf.cast(top, tf.int64), tf.argmax(student_logits, axis=-1)), tf.float32)


# ----------------------------------------------------------------------------
# Feature hints, mixed labels, several teachers.


def feature_l2_per_example(student_features, teacher_features):
  """``[B]``: the mean over its elements of each example's squared difference (FitNets' hint
  loss); both ``[B, ...]`` of one shape (:mod:`pipelines.train.features` matches them)."""
  diff = tf.cast(student_features, tf.float32) - tf.stop_gradient(
      tf.cast(teacher_features, tf.float32))
  flat = tf.reshape(tf.square(diff), [tf.shape(diff)[0], -1])
  return tf.reduce_mean(flat, axis=-1)


def mixed_cross_entropy_per_example(labels_a, labels_b, lam, student_logits):
  """``[B]``: ``lam * CE(labels_a) + (1 - lam) * CE(labels_b)``: the hard loss of a mixed batch
  (:mod:`pipelines.train.mixup`)."""
  lam = tf.cast(lam, tf.float32)
  return lam * hard_cross_entropy_per_example(labels_a, student_logits) + (
      1.0 - lam) * hard_cross_entropy_per_example(labels_b, student_logits)


def averaged_teacher_logits(logits_list, temperature: float):
  """Several teachers as one: ``T * log(mean_i softmax(z_i / T))``, ``[B, C]``.

  Softened at T, its softmax is exactly the teachers' mean probability at T, so the soft term
  distils from the average of the teachers' softened outputs; at T = 1 its argmax is the usual
  probability-averaging ensemble's."""
  t = tf.cast(temperature, tf.float32)
  logs = tf.stack([tf.nn.log_softmax(tf.cast(z, tf.float32) / t, axis=-1) for z in logits_list])
  count = tf.cast(len(logits_list), tf.float32)
  return t * (tf.reduce_logsumexp(logs, axis=0) - tf.math.log(count))
