"""The distillation loss's settings. Imports no TensorFlow."""

import dataclasses
import math
from typing import Tuple

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
    feature_distill: feature hints ``((teacher_layer, student_layer, weight), ...)``
      (``--feature_distill``): each adds ``weight`` x the mean squared difference between the
      teacher layer's output and the student layer's, seen through a learned projection
      (:mod:`pipelines.train.features`); they need the teacher in the step (online outputs).
    mixup: ALPHA > 0 mixes each batch with its own permutation, with one Beta(ALPHA, ALPHA)
      weight per batch, before the student and the teacher see it (online outputs); 0: off.
  """

  enabled: bool = True
  temperature: float = 4.0
  alpha: float = 0.1
  teacher_outputs: str = "auto"
  teacher_topk: int = 0
  feature_distill: Tuple[Tuple[str, str, float], ...] = ()
  mixup: float = 0.0

  LATER_FIELDS = ("teacher_topk", "feature_distill", "mixup")  # see resolved()

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
    if not (self.mixup >= 0 and math.isfinite(self.mixup)):
      raise ConfigError("--mixup=%s must be >= 0 (0: off)" % self.mixup)
    for teacher_layer, student_layer, weight in self.feature_distill:
      if not (weight > 0 and math.isfinite(weight)):
        raise ConfigError("--feature_distill=%s:%s:%s: the weight must be > 0" % (
            teacher_layer, student_layer, weight))
    if self.feature_distill and not self.enabled:
      raise ConfigError("--feature_distill needs a teacher; drop it or --nodistill")
    if self.needs_online() and self.enabled:
      why = "--feature_distill" if self.feature_distill else "--mixup=%s" % self.mixup
      if self.teacher_outputs == "cached":
        raise ConfigError("%s needs the teacher in every step (%s), but --teacher_outputs=cached; "
                          "use online (or auto)" % (why, "feature maps are not cached"
                                                    if self.feature_distill else
                                                    "it must see the mixed batch"))
      if self.teacher_topk:
        raise ConfigError("--teacher_topk is for cached teacher outputs; %s runs the teacher in "
                          "every step; drop one" % why)

  def needs_online(self) -> bool:
    """Whether the teacher must run in the training step whatever the augmentation: its feature
    maps are not cached, and mixed batches are new inputs."""
    return bool(self.feature_distill) or self.mixup > 0

  def check_task(self, task: str) -> None:
    """Regression distils without a temperature: refuse one that was set to something else."""
    if task == "regression" and self.enabled and self.temperature != DistillConfig.temperature:
      raise ConfigError("--temperature=%s does not apply to --task=regression: the student "
                        "learns alpha * loss(labels) + (1 - alpha) * loss(teacher predictions) "
                        "(--alpha); drop --temperature" % self.temperature)
    if task == "regression" and self.mixup:
      raise ConfigError("--mixup=%s is for classification: its hard loss mixes two labels' "
                        "cross-entropies; drop it for --task=regression" % self.mixup)
    if task == "regression" and self.enabled and self.teacher_topk:
      raise ConfigError("--teacher_topk is for classification; --task=regression caches all the "
                        "teacher's predictions")

  def resolved_for(self, task: str) -> dict:
    """:func:`resolved` without the temperature where it does not apply (regression)."""
    out = resolved(self)
    if "feature_distill" in out:  # lists, as JSON keeps them
      out["feature_distill"] = [list(hint) for hint in self.feature_distill]
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
      return "online" if augmented or self.needs_online() else "cached"
    return self.teacher_outputs


def parse_feature_distill(values) -> Tuple[Tuple[str, str, float], ...]:
  """``--feature_distill``: ``TEACHER_LAYER:STUDENT_LAYER[:WEIGHT]`` items (repeated, or
  comma-separated); the weight defaults to 1. A malformed item is a one-line ConfigError."""
  out = []
  for value in values or ():
    for item in str(value).split(","):
      item = item.strip()
      if not item:
        continue
      parts = item.split(":")
      try:
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
          raise ValueError
        weight = float(parts[2]) if len(parts) == 3 else 1.0
      except ValueError:
        raise ConfigError("--feature_distill=%s must be TEACHER_LAYER:STUDENT_LAYER[:WEIGHT], "
                          "e.g. relu_1:relu_1:0.5" % item) from None
      out.append((parts[0], parts[1], weight))
  return tuple(out)
