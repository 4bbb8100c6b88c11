"""The run directory: manifest, skip when done, --force, reruns on a changed config."""

import dataclasses
import json
import os
import shutil

import pytest

from pipelines.data import bundle as data_lib
from pipelines.export import report as report_lib
from pipelines.stages import pipeline
from tests.conftest import tiny_student_config, tiny_teacher_config


def _quiet(*_):
  pass


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
  """One teacher + student run, copied by the tests that change it (each used to train its own)."""
  workdir = tmp_path_factory.mktemp("base")
  config = pipeline.PipelineConfig(teacher=tiny_teacher_config(epochs=1),
                                   student=tiny_student_config(), until="student")
  outcomes = pipeline.run(config, str(workdir), log=_quiet)
  return workdir, config, outcomes


def _copy(base_run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(base_run[0], workdir)  # copy2: the files keep their modification times
  return workdir


@pytest.mark.slow
def test_rerun_skips_done_stages_and_force_reruns(base_run, tmp_path):
  _, config, (first, _) = base_run
  assert first.ran
  workdir = _copy(base_run, tmp_path)
  model = workdir / "teacher" / "model.keras"
  mtime = model.stat().st_mtime_ns
  manifest = json.loads((workdir / "manifest.json").read_text())
  entry = manifest["stages"]["teacher"]
  assert entry["status"] == "done"
  assert set(entry) >= {"status", "artifacts", "metrics", "config", "fingerprint", "started",
                        "finished", "wall_seconds"}
  assert entry["config"]["config"]["train"]["epochs"] == 1

  again, _ = pipeline.run(config, str(workdir), log=_quiet)
  assert not again.ran
  assert model.stat().st_mtime_ns == mtime
  assert json.loads((workdir / "manifest.json").read_text()) == manifest

  forced, _ = pipeline.run(config, str(workdir), force=True, log=_quiet)
  assert forced.ran and model.stat().st_mtime_ns != mtime


@pytest.mark.slow
def test_changed_config_reruns_the_stage_and_everything_after_it(base_run, tmp_path):
  workdir = str(_copy(base_run, tmp_path))
  base, pupil = base_run[1].teacher, base_run[1].student
  changed = dataclasses.replace(base, train=dataclasses.replace(base.train, epochs=2))
  outcome, downstream = pipeline.run(pipeline.PipelineConfig(teacher=changed, student=pupil, until="student"),
                                     workdir, log=_quiet)
  assert outcome.ran and outcome.entry["metrics"]["epochs_run"] == 2
  assert downstream.ran  # the student learns from the new teacher
  # A change to the student alone leaves the teacher as it is.
  other = dataclasses.replace(pupil, distill=dataclasses.replace(pupil.distill, temperature=2.0))
  teacher_outcome, student_outcome = pipeline.run(
      pipeline.PipelineConfig(teacher=changed, student=other, until="student"), workdir, log=_quiet)
  assert not teacher_outcome.ran and student_outcome.ran
  # Progress output is presentation, not config: changing it does not rerun.
  quiet = dataclasses.replace(changed, progress="epoch")
  same, same_student = pipeline.run(pipeline.PipelineConfig(teacher=quiet, student=other, until="student"),
                                    workdir, log=_quiet)
  assert not same.ran and not same_student.ran


@pytest.mark.slow
def test_missing_artifact_reruns_the_stage(base_run, tmp_path):
  workdir = _copy(base_run, tmp_path)
  os.remove(workdir / "teacher" / "model.keras")
  outcome, _ = pipeline.run(base_run[1], str(workdir), log=_quiet)
  assert outcome.ran and (workdir / "teacher" / "model.keras").exists()


def test_summary_names_results_and_tensorboard(base_run):
  workdir, _, outcomes = base_run
  text = report_lib.pipeline_summary(str(workdir), outcomes, 1.0)
  assert "teacher" in text and str(workdir / "teacher" / "model.keras") in text
  assert "tensorboard --logdir %s" % workdir in text


def test_corrupt_manifest_is_reported_by_path(tmp_path):
  from pipelines.config.errors import ConfigError
  from pipelines.runtime import rundir
  (tmp_path / "manifest.json").write_text('{"stages": {"teacher": ')
  with pytest.raises(ConfigError, match=r"manifest.json is unreadable .*move it aside"):
    rundir.RunDir(str(tmp_path)).entry("teacher")
  assert (tmp_path / "manifest.json").read_text() == '{"stages": {"teacher": '


@pytest.mark.slow
def test_truncated_teacher_is_named_and_rerun(base_run, tmp_path):
  from pipelines.config.errors import ConfigError
  from pipelines.runtime import rundir
  from pipelines.stages import student
  config = base_run[1]
  workdir = _copy(base_run, tmp_path)
  model = workdir / "teacher" / "model.keras"
  model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
  manifest = (workdir / "manifest.json").read_text()
  # The student alone refuses the corrupt teacher by path, before touching the manifest.
  with pytest.raises(ConfigError, match=r"teacher/model.keras is unusable .*rerun kdprune-teacher"):
    student.fingerprint_inputs(config.student, str(workdir))
  assert (workdir / "manifest.json").read_text() == manifest
  # The pipeline names it and retrains the teacher, then the student after it.
  lines = []
  teacher_outcome, student_outcome = pipeline.run(config, str(workdir), log=lines.append)
  assert teacher_outcome.ran and student_outcome.ran
  assert any("model.keras is unusable" in l and "rerunning" in l for l in lines), lines
  assert rundir.artifact_problem(str(model)) is None


def test_fields_added_later_leave_old_fingerprints_alone():
  # A finished run made before a field existed must not be retrained after an upgrade.
  from pipelines import config as configs
  assert "mixed_precision" not in configs.resolved(configs.TrainConfig())
  assert configs.resolved(configs.TrainConfig(mixed_precision=True))["mixed_precision"] is True
  assert "layer_sparsity" not in configs.resolved(configs.PruningConfig())
  assert configs.resolved(configs.PruningConfig(layer_sparsity=(("a", 0.5),)))["layer_sparsity"]
  assert "baselines" not in configs.ExportConfig().resolved()
  assert configs.ExportConfig(baselines=()).resolved()["baselines"] == ()


def test_one_directory_spelled_two_ways_is_one_fingerprint(tmp_path, monkeypatch):
  """Seen: a benchmark given --data_dir=/work/shared/data/tfds retrained the teacher that
  kdprune-pipeline had trained with --data_dir=../shared/data/tfds (the same directory)."""
  from pipelines.runtime import rundir  # pylint: disable=g-import-not-at-top
  from pipelines.stages import teacher  # pylint: disable=g-import-not-at-top
  (tmp_path / "work").mkdir()
  monkeypatch.chdir(tmp_path / "work")

  def fp(**data):
    config = dataclasses.replace(tiny_teacher_config(), data=data_lib.DataConfig(**data))
    return rundir.fingerprint(teacher.fingerprint_inputs(config))

  assert fp(dataset="mnist", data_dir="../tfds") == fp(dataset="mnist",
                                                       data_dir=str(tmp_path / "tfds"))
  assert fp(dataset="mnist", data_dir="../tfds") != fp(dataset="mnist", data_dir="../other")
  assert fp(dataset="npz:../d.npz") == fp(dataset="npz:" + str(tmp_path / "d.npz"))
  assert fp(dataset="images:pics") == fp(dataset="images:" + str(tmp_path / "work" / "pics"))


def test_the_student_record_is_what_qat_and_export_read(base_run):
  """What the student hands to QAT and the export is one typed record, read in one place."""
  from pipelines.runtime import upstream
  record = upstream.student_record(str(base_run[0]), "default")
  assert record.stage == "student/default" and record.model_path.endswith("model.keras")
  assert record.pruned_layers and set(record.layer_targets()) == set(record.layers)
  assert 0 < record.sparsity <= record.target_sparsity + 0.005 and record.m_by_n is None
  assert record.finished and "test_accuracy" in record.metrics
