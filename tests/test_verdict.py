"""The export's verdict and next steps (pipelines.export.report.verdict), one rule at a time, on
synthetic stage records: no training."""

from pipelines.export import report as report_lib


def _report(teacher_acc=0.98, int8_acc=0.975, n=359, dataset="digits", gzip_ratio=35.0):
  """An export report's fields the verdict reads: the int8 product and the float teacher."""
  return {
      "workdir": "runs/quickstart", "dataset": dataset, "task": "classification",
      "test_examples": n, "product": "student_qat_int8",
      "models": [{"name": "teacher_float", "file": "export/default/teacher_float.tflite",
                  "test_accuracy": teacher_acc},
                 {"name": "student_qat_int8", "file": "export/default/student_qat_int8.tflite",
                  "test_accuracy": int8_acc}],
      "comparison": {"product": "student_qat_int8", "reference": "teacher_float",
                     "accuracy_delta_points": round(100 * (int8_acc - teacher_acc), 4),
                     "gzip_ratio": gzip_ratio, "latency_ratio": 9.0, "product_sparsity": 0.89},
  }


def _student(acc=0.975, best=6, run=15, stopped=True):
  return {"test_accuracy": acc, "best_epoch": best, "epochs_run": run, "stopped_early": stopped}


def _qat(scheme="prune_preserve", run=2):
  return {"scheme": scheme, "epochs_run": run, "best_epoch": 1, "stopped_early": False}


def _teacher(best=7, run=10, stopped=False, **extra):
  return {"test_accuracy": 0.98, "best_epoch": best, "epochs_run": run, "stopped_early": stopped,
          **extra}


def _verdict(report=None, student=None, qat=None, teacher="trained", sparsity=0.9):
  return report_lib.verdict(report or _report(), student or _student(), qat or _qat(),
                            _teacher() if teacher == "trained" else teacher, sparsity)


def test_a_close_student_that_stopped_on_its_own_is_shipped_with_its_path():
  out = _verdict()
  assert out["ship"] is True
  assert out["verdict"] == ("Ship it: runs/quickstart/export/default/student_qat_int8.tflite, "
                            "0.50 accuracy points (2 of the 359 test examples) below the "
                            "teacher, 35.0x smaller gzipped.")
  assert out["next_steps"] == ["To go smaller: raise --final_sparsity (now 0.9), or run "
                               "kdprune-search with the drop you accept (--max_drop)."]


def test_a_student_whose_best_epoch_was_its_last_gets_more_student_epochs():
  out = _verdict(student=_student(best=15, run=15, stopped=False))
  assert ("The student's best epoch was its last (15 of 15): it was still improving; more "
          "--student_epochs (e.g. --student_epochs=30) may help.") in out["next_steps"]
  assert out["ship"]  # still within a point of the teacher: shippable, and could improve
  # Stopped by early stopping on its last epoch, or best before the last: not "still improving".
  for student in (_student(best=15, run=15, stopped=True), _student(best=14, run=15,
                                                                    stopped=False)):
    assert not any("--student_epochs" in s for s in _verdict(student=student)["next_steps"])


def test_a_teacher_whose_best_epoch_was_its_last_gets_more_teacher_epochs():
  out = _verdict(teacher=_teacher(best=10, run=10))
  assert ("The teacher's best epoch was its last (10 of 10): it was still improving; more "
          "--teacher_epochs (e.g. --teacher_epochs=20) may give a better teacher to distil "
          "from.") in out["next_steps"]
  assert not any("--teacher_epochs" in s for s in _verdict()["next_steps"])
  # An imported teacher has no epochs of its own to add.
  imported = _verdict(teacher={"imported": True, "test_accuracy": 0.98, "test_source": None})
  assert imported["ship"] and not any("--teacher_epochs" in s for s in imported["next_steps"])


def test_a_large_drop_below_the_teacher_blocks_and_points_to_sparsity_or_search():
  """The quickstart's figures: 2.23 points below the teacher on 359 test examples, the student's
  best epoch its last."""
  out = _verdict(report=_report(teacher_acc=0.9805, int8_acc=0.9582),
                 student=_student(acc=0.9554, best=15, run=15, stopped=False))
  assert out["ship"] is False
  assert out["verdict"] == ("Not yet: the int8 student is 2.23 accuracy points (8 of the 359 "
                            "test examples) below the teacher.")
  assert out["next_steps"][-1] == (
      "The int8 student is 2.23 accuracy points (8 of the 359 test examples) below the teacher: "
      "prune less (a lower --final_sparsity than 0.9), widen the student (--student_width), or "
      "let kdprune-search find the smallest student within a budget (kdprune-search "
      "--max_drop=1).")
  assert any("--student_epochs=30" in s for s in out["next_steps"])
  # The threshold: exactly one point is not "large", a little more is.
  assert _verdict(report=_report(teacher_acc=0.98, int8_acc=0.97), student=_student(acc=0.97))[
      "ship"]
  assert not _verdict(report=_report(teacher_acc=0.98, int8_acc=0.9695),
                      student=_student(acc=0.9695))["ship"]


def test_quantization_that_lost_accuracy_against_the_float_student_gets_more_qat_epochs():
  out = _verdict(report=_report(int8_acc=0.975), student=_student(acc=0.985))
  assert out["ship"] is False and out["verdict"] == (
      "Not yet: quantization cost too much against the float student.")
  assert out["next_steps"] == [
      "Quantization cost too much: the int8 file is 1.00 accuracy points (4 of the 359 test "
      "examples) below the float student after 2 QAT epochs: more --qat_epochs (e.g. "
      "--qat_epochs=4) lets QAT recover it."]
  # Half a point is the allowance; QAT that gained is fine.
  assert _verdict(report=_report(int8_acc=0.975), student=_student(acc=0.98))["ship"]
  assert _verdict(report=_report(int8_acc=0.975), student=_student(acc=0.96))["ship"]
  # A Keras 3 student had post-training quantization: QAT epochs would not apply.
  ptq = _verdict(report=_report(int8_acc=0.975), student=_student(acc=0.985), qat=_qat("ptq", 0))
  assert not ptq["ship"] and "--student_keras=2" in ptq["next_steps"][0]
  assert "--qat_epochs=" not in ptq["next_steps"][0]


def test_an_imported_teacher_on_a_carved_test_split_is_said_to_overlap():
  carved = "carved by kdprune from the image folder (--test_fraction=0.2, --seed=0)"
  teacher = {"imported": True, "test_accuracy": 0.98, "test_source": carved}
  out = _verdict(report=_report(dataset="images:/data/flowers"), teacher=teacher)
  assert out["ship"] is False
  assert out["verdict"] == "Not yet: the imported teacher's test figures may be inflated."
  assert out["next_steps"][0] == (
      "The imported teacher was evaluated on a test split %s: if it was trained on any of those "
      "examples, its test accuracy and the gap to the student are inflated. Give the data a test "
      "split of its own: lay the folder out as DIR/train/<class>/... and DIR/test/<class>/..., "
      "the teacher trained on train/ only." % carved)
  csv = _verdict(report=_report(dataset="csv:/data/t.csv"), teacher=teacher)
  assert "an .npz with x_train/y_train and x_test/y_test" in csv["next_steps"][0]
  # A trained teacher saw only kdprune's train split; an imported one on the data's own test
  # split (a train/ + test/ folder) is not suspected.
  assert _verdict(teacher=_teacher(test_source=carved))["ship"]
  assert _verdict(teacher={"imported": True, "test_accuracy": 0.98, "test_source": None})["ship"]


def test_regression_verdicts_compare_mse_ratios():
  report = {"workdir": "w", "task": "regression", "test_examples": 80,
            "product": "student_qat_int8",
            "models": [{"name": "student_qat_int8", "file": "export/default/p.tflite",
                        "test_mse": 0.012}],
            "comparison": {"mse_ratio": 1.5, "gzip_ratio": 3.0}}
  student = {"test_mse": 0.0118, "best_epoch": 2, "epochs_run": 6, "stopped_early": True}
  out = report_lib.verdict(report, student, _qat(), None, 0.75)
  assert out["verdict"] == "Not yet: the int8 student is at 1.50x the teacher's test MSE."
  assert "kdprune-search --max_drop=0.2" in out["next_steps"][-1]
  report["comparison"]["mse_ratio"] = 1.1
  assert report_lib.verdict(report, student, _qat(), None, 0.75)["verdict"] == (
      "Ship it: w/export/default/p.tflite, at 1.10x the teacher's test MSE, 3.0x smaller "
      "gzipped.")
  lost = report_lib.verdict(report, dict(student, test_mse=0.01), _qat(), None, 0.75)
  assert lost["verdict"] == (
      "Not yet: quantization cost too much against the float student.")
  assert "the int8 file's test MSE is 1.20x the float student's" in lost["next_steps"][0]


def test_the_verdict_ends_report_md_and_the_printed_table():
  report = dict(_report(teacher_acc=0.9805, int8_acc=0.9582), student="default", story=[],
                latency={"threads": 1, "runs": 5, "warmup": 1}, machine="m")
  for m in report["models"]:
    m.update(description="d", tflite_bytes=1, tflite_gzip_bytes=1, latency_ms=0.1)
  report.update(_verdict(report=report))
  text = report_lib.markdown(report).rstrip("\n").splitlines()
  verdict_at = text.index("**Verdict: %s**" % report["verdict"])
  assert text[verdict_at - 2] == "## Verdict and next steps"
  assert text[verdict_at + 2:] == ["- " + s for s in report["next_steps"]]
  assert report_lib.verdict_lines(report) == (["Verdict: " + report["verdict"]] +
                                              ["Next: " + s for s in report["next_steps"]])
  assert report_lib.verdict_lines({}) == []  # a report from before verdicts: nothing to say
