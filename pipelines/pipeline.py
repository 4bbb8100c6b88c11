"""Whole pipeline: run every stage in order through one run directory.

  kdprune-pipeline --workdir=runs/quickstart                              # embedded digits
  kdprune-pipeline --flagfile=launch/presets/mnist.cfg --workdir=runs/mnist

Stages that are done with the same config are skipped (``--force`` reruns
them); a stage whose config changed reruns, and so does everything after it.
At the end it prints each stage's result and where to find it.

Stages: teacher -> student/<name> -> qat/<name> -> export/<name>.
"""

import dataclasses
import os
import time
from typing import List

from pipelines import export as export_stage
from pipelines import qat as qat_stage
from pipelines import configs, rundir, stage
from pipelines import student as student_stage
from pipelines import teacher as teacher_stage


STAGES = ("teacher", "student", "qat", "export")


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  teacher: teacher_stage.TeacherConfig = teacher_stage.TeacherConfig()
  student: student_stage.StudentConfig = student_stage.StudentConfig()
  qat: qat_stage.QatConfig = qat_stage.QatConfig()
  export: export_stage.ExportConfig = export_stage.ExportConfig()
  until: str = "export"  # the last stage to run

  def validate(self) -> None:
    if self.until not in STAGES:
      raise ValueError("until=%r is not one of %s" % (self.until, ", ".join(STAGES)))
    included = STAGES[:STAGES.index(self.until) + 1]
    for name in included:
      getattr(self, name).validate()
    names = {getattr(self, s).name for s in included if s != "teacher"}
    if len(names) > 1:
      raise ValueError("the student, QAT and export configs name different students: %s" % (
          ", ".join(sorted(names)),))


def run(config: PipelineConfig, workdir: str, force: bool = False, log=print) -> List[stage.StageOutcome]:
  """Runs the stages in order; returns one outcome per stage.

  Every stage's config is validated before the first one starts, so a bad
  flag for a late stage fails in seconds, not after the teacher has trained.
  """
  config.validate()
  outcomes = []
  upstream_ran = False
  stages = [
      ("teacher", teacher_stage.run, config.teacher,
       lambda: teacher_stage.fingerprint_inputs(config.teacher)),
      (config.student.stage, student_stage.run, config.student,
       lambda: student_stage.fingerprint_inputs(config.student, workdir)),
      (config.qat.stage, qat_stage.run, config.qat,
       lambda: qat_stage.fingerprint_inputs(config.qat, workdir)),
      (config.export.stage, export_stage.run, config.export,
       lambda: export_stage.fingerprint_inputs(config.export, workdir)),
  ]
  for name, run_fn, stage_config, inputs in stages[:STAGES.index(config.until) + 1]:
    # Fingerprints are taken just before each stage: a student's includes the
    # teacher run it learns from, which exists only once the teacher is done.
    outcome = stage.execute(name, run_fn, stage_config, workdir, inputs(),
                            force=force or upstream_ran, log=log)
    upstream_ran = upstream_ran or outcome.ran
    outcomes.append(outcome)
  return outcomes


def summary(workdir: str, outcomes: List[stage.StageOutcome], seconds: float) -> str:
  """The table printed at the end of a pipeline run."""
  run_dir = rundir.RunDir(workdir)
  lines = ["", "kdprune pipeline finished in %.1f s: %s" % (seconds, run_dir.workdir), ""]
  row = "  %-18s %-8s %-9s %-9s %-10s %s"
  regression = any(configs.task_of(o.entry.get("metrics", {})) == "regression" for o in outcomes)
  key, title, pattern = (("test_mse", "test_mse", "%.5g") if regression else
                         ("test_accuracy", "test_acc", "%.4f"))
  lines.append(row % ("stage", "status", title, "sparsity", "nonzero", "artifact"))
  for o in outcomes:
    m = o.entry.get("metrics", {})
    model = o.entry.get("artifacts", {}).get("model", "")
    nonzero = m.get("nonzero_params", m.get("params"))
    lines.append(row % (
        o.name, "ran" if o.ran else "skipped", _fmt(m.get(key), pattern),
        _fmt(m.get("sparsity"), "%.3f"), _fmt(nonzero, "%d"),
        os.path.join(run_dir.workdir, model) if model else "-"))
  names = {o.name.split("/", 1)[1] for o in outcomes if o.name.startswith(export_stage.NAME + "/")}
  for name in sorted(names):
    table = export_stage.table(workdir, name)
    if table:
      lines += ["", "Exported (%s), measured on the files:" % os.path.join(
          run_dir.workdir, export_stage.NAME, name), ""] + [("  " + l) if l else "" for l in table.splitlines()]
  lines += ["", "  manifest:    %s" % run_dir.manifest_path,
            "  TensorBoard: tensorboard --logdir %s" % run_dir.workdir, ""]
  return "\n".join(lines)


def _fmt(value, pattern):
  return pattern % value if value is not None else "-"


def config_from_flags() -> PipelineConfig:
  from pipelines import flags as kflags  # pylint: disable=g-import-not-at-top
  return PipelineConfig(teacher=teacher_stage.config_from_flags(),
                        student=student_stage.config_from_flags(),
                        qat=qat_stage.config_from_flags(),
                        export=export_stage.config_from_flags(),
                        until=kflags.FLAGS.until)


def main(argv):
  del argv
  from pipelines import flags as kflags  # pylint: disable=g-import-not-at-top
  from pipelines import distribute  # pylint: disable=g-import-not-at-top
  config = config_from_flags()
  distribute.setup(kflags.FLAGS.strategy, config.validate)
  start = time.time()
  outcomes = run(config, kflags.FLAGS.workdir, force=kflags.FLAGS.force)
  if distribute.is_chief():
    print(summary(kflags.FLAGS.workdir, outcomes, time.time() - start))


def entry_point():
  from pipelines import cli  # pylint: disable=g-import-not-at-top
  cli.entry(main, "kdprune-pipeline")


if __name__ == "__main__":
  entry_point()
