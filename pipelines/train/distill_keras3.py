"""Distillation of a Keras 3 student: the trainer and optimizer of :mod:`pipelines.train.distill`
for Keras 3 models (on the TensorFlow backend).

:class:`DistillationTrainer` is a ``keras.Model`` (Keras 3) with its own ``train_step`` and
``test_step``: the same losses (:mod:`pipelines.train.losses`, pure TensorFlow), the same batches
(``(x, labels)`` online or without a teacher, ``(x, (labels, teacher_logits))`` cached, top-k
included), the same logged names (``loss``, ``distill_loss``, ``hard_loss``, ``accuracy`` or the
regression metric, ``agreement``, ``teacher_kl``; on validation ``loss`` is the hard loss), and the
same per-example means over the global batch. The teacher is any teacher kdprune runs (a tf_keras
model, or an imported one wrapped in tf_keras): it is called as a TensorFlow function, never
trained. A pruned student (:mod:`pipelines.prune.keras3`) has its masks advanced before each
forward pass and applied before each validation, as tfmot's wrappers do; with dynamic pruning its
:class:`pipelines.prune.dynamic.MaskRevision` revises them from each step's gradients before the
optimizer applies them (as the tf_keras trainer does). ``mixup`` (ALPHA > 0) mixes each batch
before both models see it (:mod:`pipelines.train.mixup`), as in the tf_keras trainer.

:func:`make_optimizer` gives the Keras 3 optimizer the flags name, driven by the very schedule
tf_keras students get (:func:`pipelines.train.optimizers.make_schedule`).
"""

from models.compat import tf
from models.keras3 import keras3
from pipelines.prune import keras3 as prune_keras3
from pipelines.train import distill as distill_lib
from pipelines.train import losses, mixup, optimizers

_CLASS = None


def DistillationTrainer(student, teacher=None, temperature: float = 4.0, alpha: float = 0.1,  # noqa: N802
                        distill: bool = True, task: str = "classification",
                        regression_loss: str = "mse", mask_revision=None, mixup: float = 0.0):
  """The Keras 3 trainer around ``student`` (its class is made on first use: Keras 3 is imported
  only for Keras 3 students)."""
  global _CLASS
  if _CLASS is None:
    _CLASS = _make_class()
  trainer = _CLASS(student, teacher=teacher, temperature=temperature, alpha=alpha,
                   distill=distill, task=task, regression_loss=regression_loss)
  trainer.set_revision_and_mixup(mask_revision, mixup)
  return trainer


def _make_class():
  k = keras3()

  class Trainer(k.Model):
    """:class:`pipelines.train.distill.DistillationTrainer` for a Keras 3 student."""

    _revision = None  # set_revision_and_mixup
    mixup = 0.0

    def __init__(self, student, teacher=None, temperature=4.0, alpha=0.1, distill=True,
                 task="classification", regression_loss="mse"):
      super().__init__()
      self.student = student
      self.task, self.regression_loss = task, regression_loss
      self.temperature, self.alpha, self.distill = float(temperature), float(alpha), bool(distill)
      # Not tracked: the teacher is never trained or saved with the student.
      object.__setattr__(self, "_teacher", teacher)
      if teacher is not None:
        teacher.trainable = False
      object.__setattr__(self, "_pruning", prune_keras3.state_of(student))
      self.loss_tracker = k.metrics.Mean(name="loss")
      self.distill_tracker = k.metrics.Mean(name="distill_loss")
      self.hard_tracker = k.metrics.Mean(name="hard_loss")
      self.accuracy = distill_lib.task_metric(task, regression_loss, keras_module=k)
      self.agreement_tracker = k.metrics.Mean(name="agreement")
      self.kl_tracker = k.metrics.Mean(name="teacher_kl")

    @property
    def teacher(self):
      return self._teacher

    def set_revision_and_mixup(self, mask_revision=None, mixup: float = 0.0):
      """Dynamic pruning's revisions (over this student's masks) and ``--mixup``'s ALPHA."""
      # Not tracked by the trainer: the loop's backups keep the revision (Phase.extra).
      object.__setattr__(self, "_revision", mask_revision)
      self.mixup = float(mixup)

    def _mix(self, x, labels, teacher_logits):
      """``(x, labels, mixed)``: the batch both models see; ``mixed`` is ``(labels_b, lam)`` of
      a mixup batch (None without ``--mixup``)."""
      if not self.mixup > 0:
        return x, labels, None
      if teacher_logits is not None:
        raise ValueError("mixup needs the teacher in the step: cached outputs belong to "
                         "unmixed inputs")
      x, labels, labels_b, lam = mixup.mixed_batch(
          x, labels, self.mixup, tf.convert_to_tensor(self.optimizer.iterations))
      return x, labels, (labels_b, lam)

    def _mixed_parts(self, parts, labels, mixed, student_logits):
      """The tf_keras trainer's mixup loss: the hard loss is ``lam * CE(labels) + (1 - lam) *
      CE(labels_b)``."""
      if mixed is None:
        return parts
      hard = losses.mixed_cross_entropy_per_example(labels, mixed[0], mixed[1], student_logits)
      if not self.distill:
        return {"total": hard, "hard": hard}
      return {"hard": hard, "distill": parts["distill"],
              "total": (1.0 - self.alpha) * parts["distill"] + self.alpha * hard}

    def _apply(self, grads, variables):
      """The optimizer step, after dynamic pruning's revision (from these gradients) if due."""
      if self._revision is not None:
        by_variable = {id(v): g for v, g in zip(variables, grads)}
        self._revision.revise([by_variable[id(k)] for k in self._pruning.kernels])
      self.optimizer.apply_gradients(zip(grads, variables))

    def _test_metrics(self):
      return [self.loss_tracker, self.hard_tracker, self.accuracy]

    @property
    def metrics(self):
      agreement = [self.agreement_tracker, self.kl_tracker] if (
          self.distill and self.task != "regression") else []
      return self._test_metrics() + ([self.distill_tracker] if self.distill else []) + agreement

    def call(self, x, training=False):
      return self.student(x, training=training)

    def hard_loss(self, labels, outputs):
      if self.task == "regression":
        return losses.regression_error_per_example(labels, outputs, self.regression_loss)
      return losses.hard_cross_entropy_per_example(labels, outputs)

    def _loss_parts(self, labels, teacher_logits, student_logits):
      if not self.distill:
        hard = self.hard_loss(labels, student_logits)
        return {"total": hard, "hard": hard}
      if self.task == "regression":
        return losses.regression_distillation_loss(student_logits, teacher_logits, labels,
                                                   self.alpha, self.regression_loss,
                                                   per_example=True)
      return losses.distillation_loss(student_logits, teacher_logits, labels, self.temperature,
                                      self.alpha, per_example=True)

    def train_step(self, data):
      x, y = data
      labels, teacher_logits = (y if isinstance(y, (tuple, list)) else (y, None))
      if self._pruning is not None:
        self._pruning.before_step()  # tfmot's wrapper: step, mask update on the grid, mask
      x, labels, mixed = self._mix(x, labels, teacher_logits)
      if self.distill and teacher_logits is None:  # online: the teacher runs in the step
        teacher_logits = tf.stop_gradient(self._teacher(x, training=False))
      variables = self.student.trainable_variables
      with tf.GradientTape() as tape:
        student_logits = self.student(x, training=True)
        parts = self._mixed_parts(self._loss_parts(labels, teacher_logits, student_logits),
                                  labels, mixed, student_logits)
        total = distill_lib.global_batch_mean(parts["total"])
        if self.student.losses:
          total = total + tf.add_n([tf.cast(l, tf.float32) for l in self.student.losses])
      grads = tape.gradient(total, variables)
      self._apply(grads, variables)
      self.loss_tracker.update_state(parts["total"])
      self.hard_tracker.update_state(parts["hard"])
      if self.distill:
        self.distill_tracker.update_state(parts["distill"])
      if self.distill and self.task != "regression":
        self.agreement_tracker.update_state(
            losses.top_class_agreement_per_example(teacher_logits, student_logits))
        self.kl_tracker.update_state(parts["distill"] / (self.temperature ** 2))
      self.accuracy.update_state(labels, student_logits)
      return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
      x, y = data
      labels = y[0] if isinstance(y, (tuple, list)) else y
      if self._pruning is not None:
        self._pruning.apply_masks()  # tfmot masks in inference (and again at the epoch's end)
      student_logits = self.student(x, training=False)
      hard = self.hard_loss(labels, student_logits)
      self.loss_tracker.update_state(hard)
      self.hard_tracker.update_state(hard)
      self.accuracy.update_state(labels, student_logits)
      return {m.name: m.result() for m in self._test_metrics()}

  return Trainer


def compile_trainer(trainer, train_config, steps_per_epoch: int) -> None:
  """Compiles ``trainer`` with the flags' optimizer; its slots built now (as tf_keras students')."""
  trainer.compile(optimizer=make_optimizer(train_config, steps_per_epoch),
                  steps_per_execution=train_config.steps_per_execution, jit_compile=False)
  trainer.optimizer.build(trainer.student.trainable_variables)


def make_optimizer(config, steps_per_epoch: int):
  """The Keras 3 optimizer ``config`` names, on :func:`optimizers.make_schedule`'s schedule."""
  k = keras3()
  schedule = optimizers.make_schedule(config, steps_per_epoch)

  class Schedule(k.optimizers.schedules.LearningRateSchedule):
    """The tf_keras schedule, called on the Keras 3 optimizer's step."""

    def __call__(self, step):
      return schedule(step)

    def get_config(self):
      return {}

  return optimizers.make_optimizer(config, steps_per_epoch, keras_module=k, lr=Schedule())
