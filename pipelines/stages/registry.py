"""The stages every driver runs (the command line, the Python API, the pipeline, the sweep and the
search), by kind and by config type. Each is a :class:`pipelines.runtime.execute.Stage`, defined
at the end of its module as ``STAGE``.
"""

from typing import Dict

from pipelines.runtime.execute import Stage
from pipelines.stages import export, qat, student, teacher

# In pipeline order: teacher -> student/<name> -> qat/<name> -> export/<name>.
STAGES: Dict[str, Stage] = {s.kind: s for s in (teacher.STAGE, student.STAGE, qat.STAGE,
                                                 export.STAGE)}


def for_config(config) -> Stage:
  """The stage whose config ``config`` is."""
  for stage in STAGES.values():
    if type(config) is stage.config_type:  # pylint: disable=unidiomatic-typecheck
      return stage
  raise TypeError("no stage takes a %s; the stages take %s" % (
      type(config).__name__, ", ".join(s.config_type.__name__ for s in STAGES.values())))
