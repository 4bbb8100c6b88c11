"""Gradual pruning of the student: schedule, structure, method, and the steps they resolve to.

Imports no TensorFlow.
"""

import dataclasses
import math
from typing import Optional, Tuple

from pipelines.config.errors import ConfigError

PRUNING_SCHEDULES = ("polynomial_decay", "constant")
PRUNING_STRUCTURES = ("unstructured", "m_by_n", "channels")
PRUNING_METHODS = ("magnitude", "dynamic")


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
      fewer than ``MIN_PRUNABLE_WEIGHTS`` kernel weights that also hold less than
      ``MIN_PRUNABLE_SHARE`` of the student's prunable weights (pruning them saves
      nothing and costs accuracy; in a small tabular MLP every layer is under 512
      weights, and its big layers are still pruned: see
      :func:`pipelines.prune.plan.auto_keeps`).
    layer_sparsity: ``((layer name, final sparsity), ...)``: layers that end at
      their own final sparsity instead of ``final_sparsity`` (same schedule
      shape and steps). Unstructured pruning only.
    method: ``magnitude`` (tfmot: a pruned weight stays pruned) or ``dynamic``
      (the same schedule up to ``end``; then, at the final sparsity, every
      ``mask_update_every`` steps until ``mask_update_end`` the smallest active
      weights are dropped and as many pruned ones regrown where the loss
      gradient is largest, as in RigL, Evci et al. 2020; see
      :mod:`pipelines.prune.dynamic`). One owner of the mask at any step:
      tfmot while the sparsity ramps up, the revisions after (a regrown weight
      starts at zero, so a later magnitude update would prune it again).
      Unstructured pruning only.
    mask_update_every: steps between two mask revisions (``dynamic``).
    drop_fraction: share of the active weights revised at the first revision;
      it decays to 0 along a cosine (RigL's alpha = 0.3).
    mask_update_end: when revisions stop, a step or a fraction of the planned
      training; it must leave at least one revision after ``end`` (the default
      0.9 gives the revisions 0.6 -> 0.9 with the default ``end``).
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
  end: str = "0.6"
  structure: str = "unstructured"
  m_by_n: Tuple[int, int] = (2, 4)
  keep_dense: Tuple[str, ...] = ("auto",)
  layer_sparsity: Tuple[Tuple[str, float], ...] = ()
  method: str = "magnitude"
  mask_update_every: int = 100
  drop_fraction: float = 0.3
  mask_update_end: str = "0.9"
  channel_fraction: float = 0.5

  MIN_PRUNABLE_WEIGHTS = 512
  MIN_PRUNABLE_SHARE = 0.25
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

    With ``method="dynamic"`` the mask revisions begin where tfmot's updates stop
    (``mask_update_begin`` = ``end_step``: tfmot updates masks only at steps in
    ``[begin, end]``), the first at ``end_step + mask_update_every``, and a
    ``mask_update_end`` that leaves none after it is refused.

    Returns:
      ``{"begin_step", "end_step", "frequency", "final_step", "planned_steps"}``
      (and ``"mask_update_begin", "mask_update_end", "mask_update_every"`` for
      ``dynamic``); ``final_step`` is the first step at which every pruned layer
      holds the final sparsity.
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
      if stop <= end + self.mask_update_every:
        raise ConfigError(
            "--mask_update_end=%s (step %d) leaves no mask revision after the pruning schedule "
            "reaches its final sparsity (--pruning_end, step %d) at --mask_update_every=%d "
            "(revisions own the mask only once tfmot's updates stop); raise --mask_update_end or "
            "lower --pruning_end/--mask_update_every" % (self.mask_update_end, stop, end,
                                                        self.mask_update_every))
      steps.update({"mask_update_begin": end, "mask_update_every": self.mask_update_every,
                    "mask_update_end": stop})
    return steps
