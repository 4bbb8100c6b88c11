"""The stage protocol (pipelines/runtime/execute.Stage): a stage of one's own runs in the pipeline
beside the built-in ones, is skipped when done, reruns when its config changes, and runs again
after a failed attempt; its upstream check comes before any work."""

import dataclasses
import json
import os

import pytest

from pipelines.config.errors import ConfigError
from pipelines.runtime import rundir, upstream
from pipelines.runtime.execute import Stage, StageResult, run_stage
from pipelines.stages import pipeline, registry
from tests.conftest import tiny_teacher_config


@dataclasses.dataclass(frozen=True)
class ReportConfig:
  """A toy stage: writes the teacher's test accuracy, scaled."""
  scale: float = 100.0
  fail: bool = False
  stage = "report_card"

  def validate(self):
    if self.scale <= 0:
      raise ConfigError("scale=%s must be > 0" % self.scale)


def _run(config, workdir):
  if config.fail:
    raise RuntimeError("interrupted on purpose")
  accuracy = upstream.teacher_entry(workdir)["metrics"]["test_accuracy"]
  path = os.path.join(workdir, config.stage, "card.json")
  rundir.write_json(path, {"grade": accuracy * config.scale})
  return StageResult(artifacts={"card": path}, metrics={"grade": accuracy * config.scale})


REPORT = Stage(kind="report_card", config_type=ReportConfig, validate=ReportConfig.validate,
               fingerprint_inputs=lambda c, w: {"scale": c.scale, "teacher": upstream.identity(
                   upstream.teacher_entry(w))},
               run=_run, check_upstream=lambda c, w: upstream.teacher_entry(w))


def test_a_stage_of_ones_own_runs_skips_and_reruns_in_the_pipeline(tmp_path):
  workdir = str(tmp_path)
  quiet = dict(log=lambda *_: None)
  with pytest.raises(ConfigError, match="no finished teacher"):  # its upstream check, first
    run_stage(REPORT, ReportConfig(), workdir, **quiet)
  assert not os.path.exists(tmp_path / "report_card")
  teacher = (registry.STAGES["teacher"], tiny_teacher_config(epochs=1))
  outcomes = pipeline.run_stages([teacher, (REPORT, ReportConfig())], workdir, **quiet)
  assert [o.ran for o in outcomes] == [True, True]
  card = json.loads((tmp_path / "report_card" / "card.json").read_text())
  assert card["grade"] == pytest.approx(100 * outcomes[0].entry["metrics"]["test_accuracy"])
  outcomes = pipeline.run_stages([teacher, (REPORT, ReportConfig())], workdir, **quiet)
  assert [o.ran for o in outcomes] == [False, False]  # done with these configs: skipped
  with pytest.raises(RuntimeError, match="interrupted on purpose"):
    pipeline.run_stages([teacher, (REPORT, ReportConfig(scale=10.0, fail=True))], workdir,
                        **quiet)
  assert rundir.RunDir(workdir).entry("report_card")["status"] == "failed"
  outcomes = pipeline.run_stages([teacher, (REPORT, ReportConfig(scale=10.0))], workdir, **quiet)
  assert [o.ran for o in outcomes] == [False, True]  # the teacher stays, the failed stage reruns
  assert outcomes[1].entry["metrics"]["grade"] == pytest.approx(card["grade"] / 10)
  with pytest.raises(ConfigError, match="scale=-1 must be > 0"):
    run_stage(REPORT, ReportConfig(scale=-1), workdir, **quiet)


def test_every_driver_finds_the_built_in_stages_in_one_registry():
  assert list(registry.STAGES) == ["teacher", "student", "qat", "export"]
  assert pipeline.STAGES is registry.STAGES
  assert registry.for_config(tiny_teacher_config()) is registry.STAGES["teacher"]
  assert not registry.STAGES["export"].collective and registry.STAGES["qat"].collective
  with pytest.raises(TypeError, match="no stage takes a ReportConfig"):
    registry.for_config(ReportConfig())


def test_an_unexpected_failure_is_one_line_naming_the_stage_with_its_traceback_kept(tmp_path):
  """In one process too: the stage, the exception and where its traceback is, at once (a chief
  waits for a failed worker's record only under a multi-worker strategy)."""
  import time  # pylint: disable=g-import-not-at-top

  from models.compat import tf  # pylint: disable=g-import-not-at-top
  from pipelines.config.errors import StageError  # pylint: disable=g-import-not-at-top
  from pipelines.runtime import execute  # pylint: disable=g-import-not-at-top

  def run_fn(config, workdir):
    raise tf.errors.InternalError(None, None, "a kernel\nfailed")

  start = time.time()
  with pytest.raises(StageError, match=r"^toy stage: InternalError: a kernel failed \(traceback: "
                                       r".*toy/error.txt\)$"):
    execute.execute("toy", run_fn, None, str(tmp_path), {}, validate=lambda: None,
                    log=lambda *_: None)
  assert time.time() - start < 5
  assert "Traceback" in (tmp_path / "toy" / "error.txt").read_text()
  assert rundir.RunDir(str(tmp_path)).entry("toy")["status"] == "failed"
