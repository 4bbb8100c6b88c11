"""The sparsity sweep: one teacher, several students through QAT and export, the Pareto front."""

import dataclasses
import json

import pytest

from pipelines.config.errors import ConfigError
from pipelines.export import pareto as pareto_lib
from pipelines.stages import pipeline, sweep
from tests.conftest import (
  tiny_export_config,
  tiny_qat_config,
  tiny_student_config,
  tiny_teacher_config,
)


def test_pareto_front():
  pts = [{"tflite_gzip_bytes": 10, "test_accuracy": 0.90},
         {"tflite_gzip_bytes": 20, "test_accuracy": 0.95},
         {"tflite_gzip_bytes": 30, "test_accuracy": 0.94},   # bigger and worse than the 2nd
         {"tflite_gzip_bytes": 10, "test_accuracy": 0.85}]   # same size, worse than the 1st
  assert [p["pareto"] for p in pareto_lib.pareto(pts)] == [True, True, False, False]


@pytest.mark.parametrize("kwargs,message", [
    (dict(sparsities=(1.0,)), "each must be in [0, 1)"),
    (dict(sparsities=(0.5, 0.5)), "twice"),
    (dict(structures=("blocks",)), "--structures=blocks"),
    (dict(widths=(0,)), "--student_widths=0"),
    (dict(methods=("rigl",)), "--pruning_methods=rigl"),
    (dict(methods=("dynamic", "dynamic")), "twice"),
])
def test_bad_sweeps_are_refused(kwargs, message):
  with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")):
    sweep.SweepConfig(**kwargs).validate()


@pytest.mark.slow
def test_sweep_trains_one_teacher_and_reports_every_student(tmp_path):
  base = pipeline.PipelineConfig(teacher=tiny_teacher_config(epochs=2),
                                 student=tiny_student_config(epochs=3),
                                 qat=tiny_qat_config(), export=tiny_export_config())
  config = sweep.SweepConfig(sparsities=(0.5, 0.9), structures=("unstructured", "m_by_n"))
  out = sweep.run(base, config, str(tmp_path), log=lambda *_: None)
  names = [e["student"] for e in out["students"]]
  assert names == ["s0.500_unstructured_w64", "s0.900_unstructured_w64", "m_by_n_2-4_w64"]
  manifest = json.loads((tmp_path / "manifest.json").read_text())["stages"]
  assert sum(1 for k in manifest if k == "teacher") == 1
  for e in out["students"]:
    assert manifest["export/" + e["student"]]["status"] == "done"
    assert e["sparsity"] >= e["target_sparsity"] * 0.9  # over every kernel, kept layers included
  by_name = {e["student"]: e for e in out["students"]}
  assert by_name["s0.900_unstructured_w64"]["nonzero_params"] < \
      by_name["s0.500_unstructured_w64"]["nonzero_params"]
  assert any(e["pareto"] for e in out["students"])
  d = tmp_path / "sweep"
  assert json.loads((d / "sweep.json").read_text())["students"] == out["students"]
  assert "| s0.900_unstructured_w64" in (d / "sweep.md").read_text()
  assert (d / "pareto.png").read_bytes()[:4] == b"\x89PNG"
  # A rerun skips every finished stage.
  lines = []
  sweep.run(base, config, str(tmp_path), log=lines.append)
  assert lines and all("skipping" in l for l in lines)


def test_sweep_over_pruning_methods_names_each_student():
  base = tiny_student_config()
  config = sweep.SweepConfig(sparsities=(0.9,), structures=("unstructured", "m_by_n", "channels"),
                             methods=("magnitude", "dynamic"))
  combos = sweep.students(base, config)
  assert [n for n, _ in combos] == ["s0.900_unstructured_w64", "s0.900_unstructured_w64_dynamic",
                                    "m_by_n_2-4_w64", "channels_0.50_w64"]
  assert [spec["method"] for _, spec in combos] == ["magnitude", "dynamic", "magnitude",
                                                    "magnitude"]
  full = pipeline.PipelineConfig(student=base, qat=tiny_qat_config(), export=tiny_export_config())
  assert sweep.pipeline_for(full, *combos[1]).student.pruning.method == "dynamic"
  # A base that is already dynamic gives dynamic names without --pruning_methods.
  dyn = dataclasses.replace(base, pruning=dataclasses.replace(base.pruning, method="dynamic"))
  assert [n for n, _ in sweep.students(dyn, sweep.SweepConfig(sparsities=(0.9,)))] == [
      "s0.900_unstructured_w64_dynamic"]


@pytest.mark.slow
def test_forced_sweep_trains_the_teacher_once(tmp_path):
  """``kdprune-sweep --force`` reruns the teacher once, then every student (issue 17, defect 7:
  each student's forced pipeline retrained the teacher). One forced sweep in a fresh run
  directory shows it: with the defect the teacher ran once per student."""
  base = pipeline.PipelineConfig(teacher=tiny_teacher_config(epochs=1),
                                 student=tiny_student_config(epochs=1),
                                 qat=tiny_qat_config(), export=tiny_export_config())
  config = sweep.SweepConfig(sparsities=(0.5, 0.9))
  lines = []
  sweep.run(base, config, str(tmp_path), force=True, log=lines.append)
  running = [l.split("]")[0][1:] for l in lines if "] running" in l]
  assert running.count("teacher") == 1, running
  for student in ("s0.500_unstructured_w64", "s0.900_unstructured_w64"):
    for kind in ("student", "qat", "export"):
      assert running.count("%s/%s" % (kind, student)) == 1, running
  manifest = json.loads((tmp_path / "manifest.json").read_text())["stages"]
  teacher_run = manifest["teacher"]["finished"]
  for student in ("s0.500_unstructured_w64", "s0.900_unstructured_w64"):
    inputs = json.dumps(manifest["student/" + student]["config"])
    assert teacher_run in inputs  # every student learnt from the one teacher run


@pytest.mark.slow
def test_a_sweep_of_keras3_students_prunes_each_with_the_keras3_backend(tmp_path):
  """``kdprune-sweep --student_keras=3``: every student of the sweep (unstructured and m:n) is a
  Keras 3 model pruned by kdprune's own backend, through PTQ and the int8 export."""
  student = dataclasses.replace(tiny_student_config(epochs=2), keras=3)
  base = pipeline.PipelineConfig(teacher=tiny_teacher_config(epochs=1), student=student,
                                 qat=tiny_qat_config(), export=tiny_export_config())
  config = sweep.SweepConfig(sparsities=(0.8,), structures=("unstructured", "m_by_n"))
  out = sweep.run(base, config, str(tmp_path), log=lambda *_: None)
  assert [e["student"] for e in out["students"]] == ["s0.800_unstructured_w64", "m_by_n_2-4_w64"]
  manifest = json.loads((tmp_path / "manifest.json").read_text())["stages"]
  for e in out["students"]:
    assert manifest["student/" + e["student"]]["metrics"]["pruning_backend"] == "keras3"
    assert manifest["qat/" + e["student"]]["metrics"]["scheme"] == "ptq"
    assert manifest["export/" + e["student"]]["status"] == "done"
    assert e["sparsity"] >= e["target_sparsity"] * 0.9
