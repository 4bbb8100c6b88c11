"""Whole pipeline: run every stage in order through one run directory.

  kdprune-pipeline --workdir=runs/quickstart                              # embedded digits
  kdprune-pipeline --flagfile=launch/presets/mnist.cfg --workdir=runs/mnist

Stages that are done with the same config are skipped (``--force`` reruns
them); a stage whose config changed reruns, and so does everything after it.
At the end it prints each stage's result and where to find it.

Stages: teacher -> student/<name> -> qat/<name> -> export/<name>.
"""

from typing import Collection, List, Union

from pipelines.config import PipelineConfig
from pipelines.runtime.execute import StageOutcome, execute
from pipelines.stages import export, qat, student, teacher

__all__ = ["PipelineConfig", "MODULES", "validate", "run"]

# Each stage's module: validate(config), fingerprint_inputs(config, workdir), run(config, workdir).
MODULES = {"teacher": teacher, "student": student, "qat": qat, "export": export}


def validate(config: PipelineConfig) -> None:
  """Every included stage's checks, before the first one starts."""
  config.validate()
  for kind in config.included():
    MODULES[kind].validate(getattr(config, kind))


def run(config: PipelineConfig, workdir: str, force: Union[bool, Collection[str]] = False,
        log=None) -> List[StageOutcome]:
  """Runs the stages in order; returns one outcome per stage.

  Every stage's config is validated before the first one starts, so a bad
  flag for a late stage fails in seconds, not after the teacher has trained.
  ``force`` reruns every stage (``True``) or only the stage kinds it names
  (e.g. ``{"student", "qat", "export"}``: the sweep forces its teacher once);
  a stage after one that ran reruns either way.
  """
  validate(config)
  outcomes = []
  upstream_ran = False
  forced = set(MODULES) if force is True else set(force or ())
  for kind in config.included():
    module, stage_config = MODULES[kind], getattr(config, kind)
    # Fingerprints are taken just before each stage: a student's includes the
    # teacher run it learns from, which exists only once the teacher is done.
    outcome = execute(stage_config.stage, module.run, stage_config, workdir,
                      module.fingerprint_inputs(stage_config, workdir),
                      force=kind in forced or upstream_ran, log=log)
    upstream_ran = upstream_ran or outcome.ran
    outcomes.append(outcome)
  return outcomes
