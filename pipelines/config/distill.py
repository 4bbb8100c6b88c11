"""The distillation loss's settings. Imports no TensorFlow."""

import dataclasses
import math

from pipelines.config.base import resolved
from pipelines.config.errors import ConfigError

TEACHER_OUTPUTS = ("auto", "cached", "online")


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
    teacher_topk: 0 (cached outputs keep all the teacher's logits) or K: keep its K largest
      logits and the rest as one bucket (for many classes: ``N x (K + 1)`` float16 values on
      disk instead of ``N x C``); the loss is then the KL over those K + 1 outcomes
      (:mod:`pipelines.train.losses`). K at least the number of classes keeps them all.
  """

  enabled: bool = True
  temperature: float = 4.0
  alpha: float = 0.1
  teacher_outputs: str = "auto"
  teacher_topk: int = 0

  LATER_FIELDS = ("teacher_topk",)  # see resolved()

  def validate(self) -> None:
    if not (self.temperature > 0 and math.isfinite(self.temperature)):
      raise ConfigError("--temperature=%s must be > 0" % self.temperature)
    if not 0.0 <= self.alpha <= 1.0:
      raise ConfigError("--alpha=%s must be in [0, 1]" % self.alpha)
    if self.teacher_outputs not in TEACHER_OUTPUTS:
      raise ConfigError("--teacher_outputs=%s is not one of %s" % (
          self.teacher_outputs, ", ".join(TEACHER_OUTPUTS)))
    if self.teacher_topk < 0:
      raise ConfigError("--teacher_topk=%s must be >= 0 (0: all the teacher's logits)" % (
          self.teacher_topk,))
    if self.teacher_topk and self.teacher_outputs == "online":
      raise ConfigError("--teacher_topk is for cached teacher outputs (the store on disk); "
                        "--teacher_outputs=online uses all the teacher's logits in every step")

  def check_task(self, task: str) -> None:
    """Regression distils without a temperature: refuse one that was set to something else."""
    if task == "regression" and self.enabled and self.temperature != DistillConfig.temperature:
      raise ConfigError("--temperature=%s does not apply to --task=regression: the student "
                        "learns alpha * loss(labels) + (1 - alpha) * loss(teacher predictions) "
                        "(--alpha); drop --temperature" % self.temperature)
    if task == "regression" and self.enabled and self.teacher_topk:
      raise ConfigError("--teacher_topk is for classification; --task=regression caches all the "
                        "teacher's predictions")

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
    if augment != "none" and self.enabled and self.teacher_topk:
      raise ConfigError("--teacher_topk with %s=%s: augmented inputs need online teacher "
                        "outputs, and --teacher_topk is for cached ones; drop one" % (flag, augment))

  def resolved_teacher_outputs(self, augmented: bool = False) -> str:
    if self.teacher_outputs == "auto":
      return "online" if augmented else "cached"
    return self.teacher_outputs
