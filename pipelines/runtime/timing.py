"""Where a stage's wall time goes: named phases, recorded in metrics.json and the manifest.

A stage marks the end of each phase of its work (the time since the previous
mark goes to the phase named)::

  bundle = data_lib.load(config.data)
  timing.lap("data")
  model.fit(...)
  timing.lap("training")

or wraps a block that sits inside another phase's span::

  with timing.phase("evaluation"):
    evaluate(...)

:func:`pipelines.runtime.execute.execute` starts a fresh :class:`Phases` for
each stage it runs and records the result; the time no phase covers is
``other``, so the phases always add up to the stage's wall time. A phase
entered twice (e.g. ``evaluation`` on validation, then test) accumulates.
Outside :func:`execute` (a stage's ``run`` called directly) the phases are
kept in a throwaway timer, so stages need not check.
"""

import contextlib
import time
from typing import Dict, List, Optional

# The vocabulary, in the order tables print it. ``startup`` is TensorFlow's import and the
# first graph setup, paid once per process.
PHASES = ("startup", "data", "teacher_outputs", "build", "training", "evaluation", "conversion",
          "latency", "saving")
OTHER = "other"


class Phases:
  """Accumulated wall seconds per phase; nested phases count toward the inner one only."""

  def __init__(self):
    self.seconds: Dict[str, float] = {}
    self._start = self._mark = time.perf_counter()
    self._inner = 0.0  # seconds recorded by phase() blocks since the last mark
    self._stack: List[list] = []  # [name, started, paused seconds from inner phases]

  def _add(self, name: str, seconds: float) -> None:
    if name not in PHASES:
      raise ValueError("unknown phase %r (known: %s)" % (name, ", ".join(PHASES)))
    self.seconds[name] = self.seconds.get(name, 0.0) + max(0.0, seconds)

  def lap(self, name: str) -> float:
    """Gives the time since the previous mark (less the phase() blocks in it) to ``name``."""
    now = time.perf_counter()
    spent = now - self._mark - self._inner
    self._add(name, spent)
    self._mark, self._inner = now, 0.0
    return spent

  @contextlib.contextmanager
  def phase(self, name: str):
    if name not in PHASES:
      raise ValueError("unknown phase %r (known: %s)" % (name, ", ".join(PHASES)))
    frame = [name, time.perf_counter(), 0.0]
    self._stack.append(frame)
    try:
      yield
    finally:
      self._stack.pop()
      spent = time.perf_counter() - frame[1]
      self._add(name, spent - frame[2])
      if self._stack:
        self._stack[-1][2] += spent  # the outer phase does not count the inner one's time
      else:
        self._inner += spent  # nor does the next lap

  def summary(self, total: Optional[float] = None) -> Dict[str, float]:
    """Seconds per phase (rounded to ms) in :data:`PHASES` order, then ``other`` and ``total``."""
    total = time.perf_counter() - self._start if total is None else total
    out = {name: round(self.seconds[name], 3) for name in PHASES if name in self.seconds}
    out[OTHER] = round(max(0.0, total - sum(self.seconds.values())), 3)
    out["total"] = round(total, 3)
    return out


_current: Optional[Phases] = None


def start() -> Phases:
  """A fresh timer that :func:`phase` records into (one per stage run)."""
  global _current
  _current = Phases()
  return _current


def current() -> Phases:
  global _current
  if _current is None:
    _current = Phases()
  return _current


def phase(name: str):
  """Times a block as ``name`` in the current stage's timer."""
  return current().phase(name)


def lap(name: str) -> float:
  """Ends a phase of the current stage: the time since the previous mark goes to ``name``."""
  return current().lap(name)


def table(rows: List[tuple]) -> str:
  """``rows`` of ``(stage, summary or None)`` as a fixed-width table (seconds), for the log.

  A stage that was skipped (``None``) shows ``skipped``; the last line sums the stages that ran.
  """
  used = [p for p in PHASES if any(s and s.get(p) for _, s in rows)] + [OTHER, "total"]
  width = max([len("stage")] + [len(name) for name, _ in rows] + [len("all stages")])
  cols = [max(9, len(p)) + 2 for p in used]
  head = "%-*s" % (width, "stage") + "".join("%*s" % (c, p) for c, p in zip(cols, used))
  lines = [head]
  sums = dict.fromkeys(used, 0.0)
  for name, summary in rows:
    if summary is None:
      lines.append("%-*s%*s" % (width, name, cols[0], "skipped"))
      continue
    cells = []
    for c, p in zip(cols, used):
      value = summary.get(p, 0.0)
      sums[p] += value
      cells.append("%*.1f" % (c, value) if value else "%*s" % (c, "-"))
    lines.append("%-*s" % (width, name) + "".join(cells))
  lines.append("%-*s" % (width, "all stages") + "".join(
      "%*.1f" % (c, sums[p]) for c, p in zip(cols, used)))
  return "\n".join(lines)
