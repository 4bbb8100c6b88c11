"""Whole pipeline: run every stage in order through one run directory.

  kdprune-pipeline --workdir=runs/quickstart                              # embedded digits
  kdprune-pipeline --flagfile=launch/presets/mnist.cfg --workdir=runs/mnist

Stages that are done with the same config are skipped (``--force`` reruns
them); a stage whose config changed reruns, and so does everything after it.
At the end it prints each stage's result and where to find it.

Stages: teacher -> student/<name> -> qat/<name> -> export/<name>.
"""

from typing import Collection, List, Sequence, Tuple, Union

from pipelines.config import PipelineConfig
from pipelines.runtime.execute import Stage, StageOutcome, run_stage
from pipelines.stages.registry import STAGES

__all__ = ["PipelineConfig", "STAGES", "validate", "run", "run_stages"]


def validate(config: PipelineConfig) -> None:
  """Every included stage's checks, before the first one starts."""
  config.validate()
  for kind in config.included():
    STAGES[kind].validate(getattr(config, kind))


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
  return run_stages([(STAGES[kind], getattr(config, kind)) for kind in config.included()],
                    workdir, force=force, log=log)


def run_stages(steps: Sequence[Tuple[Stage, object]], workdir: str,
               force: Union[bool, Collection[str]] = False, log=None) -> List[StageOutcome]:
  """Runs ``(stage, config)`` pairs in order through ``workdir``: each is skipped when the
  manifest says it is done with its config (``force``: ``True``, or the stage kinds to rerun);
  a stage after one that ran reruns. Any :class:`Stage` can take part (the built-in ones are
  :data:`STAGES`)."""
  outcomes = []
  upstream_ran = False
  forced = {stage.kind for stage, _ in steps} if force is True else set(force or ())
  for stage, stage_config in steps:
    # Fingerprints are taken just before each stage (in run_stage): a student's includes the
    # teacher run it learns from, which exists only once the teacher is done.
    outcome = run_stage(stage, stage_config, workdir,
                        force=stage.kind in forced or upstream_ran, log=log)
    upstream_ran = upstream_ran or outcome.ran
    outcomes.append(outcome)
  return outcomes
