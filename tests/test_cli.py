"""Entry points as a user runs them: help, one-line errors, exit codes, nothing written."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def _run(*args, module="pipelines.cli.teacher", env=None):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env or ENV,
                        capture_output=True, text=True, timeout=300)


def _flag_names():
  from absl import flags

  from pipelines.cli import flags as kflags
  kflags.define_flags()
  return [f.name for f in flags.FLAGS.get_flags_for_module("pipelines.cli.flags")]


def test_helpfull_documents_every_flag():
  result = _run("--helpfull")
  assert result.returncode == 0, result.stderr
  names = _flag_names()
  assert len(names) > 25
  for name in names:
    assert ("--%s:" % name in result.stdout or "--[no]%s:" % name in result.stdout), name


def _assert_one_line_error(result, program, *fragments):
  assert result.returncode == 2, (result.stdout, result.stderr)
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert len(lines) == 1, result.stderr
  assert lines[0].startswith("%s: error: " % program), lines[0]
  for fragment in fragments:
    assert fragment in lines[0]
  assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("args,fragments", [
    (["--teacher_epochs=abc"], ["--teacher_epochs=abc"]),
    (["--teacher_optimizer=lamb"], ["--teacher_optimizer", "adam"]),
    (["--no_such_flag=1"], ["no_such_flag"]),
    (["--dataset=mnsit"], ["--dataset=mnsit: no such TFDS dataset", "mnist"]),
    (["--dataset=npz:/nonexistent/data.npz"], ["--dataset=npz:/nonexistent/data.npz: no such file"]),
    (["--teacher_model=transformer"], ["--teacher_model=transformer: unknown model"]),
    (["--teacher_learning_rate=-1"], ["--teacher_learning_rate=-1.0 must be a positive number"]),
    (["positional"], ["unexpected argument(s) positional"]),
])
def test_bad_invocations_fail_in_one_line_and_write_nothing(tmp_path, args, fragments):
  workdir = tmp_path / "run"
  result = _run("--workdir=%s" % workdir, *args)
  _assert_one_line_error(result, "kdprune-teacher", *fragments)
  assert not workdir.exists()


@pytest.mark.parametrize("args,fragments", [
    (["--final_sparsity=1.5"], ["--final_sparsity=1.5 must be in [0, 1)"]),
    # --pruning_end beyond the run is checked after the teacher: see the finished-run test below
    (["--pruning_structure=m_by_n", "--final_sparsity=0.8"], ["does not match --m_by_n=2:4"]),
    (["--m_by_n=2x4", "--pruning_structure=m_by_n"], ["--m_by_n=2x4 must be m:n"]),
    (["--temperature=-1"], ["--temperature=-1.0 must be > 0"]),
    ([], ["no finished teacher in", "run kdprune-teacher"]),
])
def test_bad_student_invocations(tmp_path, args, fragments):
  workdir = tmp_path / "run"
  result = _run("--workdir=%s" % workdir, *args, module="pipelines.cli.student")
  _assert_one_line_error(result, "kdprune-student", *fragments)
  assert not workdir.exists()


@pytest.mark.parametrize("module,program,args,fragments", [
    ("pipelines.cli.qat", "kdprune-qat", [], ["no finished student/default in", "run kdprune-student"]),
    ("pipelines.cli.qat", "kdprune-qat", ["--student_name=wide"],
     ["no finished student/wide", "kdprune-student --student_name=wide"]),
    ("pipelines.cli.qat", "kdprune-qat", ["--qat_scheme=fp16"], ["--qat_scheme", "prune_preserve"]),
    ("pipelines.cli.qat", "kdprune-qat", ["--qat_epochs=0"], ["--qat_epochs=0"]),
    ("pipelines.cli.export", "kdprune-export", [], ["no finished qat/default in", "run kdprune-qat"]),
    ("pipelines.cli.export", "kdprune-export", ["--latency_runs=0"], ["--latency_runs=0 must be >= 1"]),
])
def test_bad_qat_and_export_invocations(tmp_path, module, program, args, fragments):
  workdir = tmp_path / "run"
  result = _run("--workdir=%s" % workdir, *args, module=module)
  _assert_one_line_error(result, program, *fragments)
  assert not workdir.exists()


def test_workdir_is_required():
  result = _run(module="pipelines.cli.pipeline")
  _assert_one_line_error(result, "kdprune-pipeline", "--workdir")


@pytest.mark.slow
def test_pipeline_end_to_end_from_the_command_line(tmp_path):
  workdir = tmp_path / "run"
  args = ["--workdir=%s" % workdir, "--teacher_model=mlp", "--teacher_width=16",
          "--teacher_depth=1", "--teacher_epochs=1", "--student_model=mlp", "--student_width=32",
          "--student_depth=1", "--student_epochs=2", "--final_sparsity=0.5", "--qat_epochs=1",
          "--latency_runs=5", "--latency_warmup=1", "--representative_examples=16",
          "--progress=none"]
  result = _run(*args, module="pipelines.cli.pipeline")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "kdprune pipeline finished" in result.stdout
  assert "tensorboard --logdir %s" % workdir in result.stdout
  assert (workdir / "teacher" / "model.keras").is_file()
  assert (workdir / "student" / "default" / "model.keras").is_file()
  assert "student/default" in result.stdout
  # The report's table closes the run; every stage's artifacts are there.
  assert "| student_qat_int8 |" in result.stdout and "smaller gzipped" in result.stdout
  assert (workdir / "export" / "default" / "report.md").is_file()
  assert (workdir / "export" / "default" / "student_qat_int8.tflite").is_file()
  # By default the export measures the float teacher beside the product, no student baselines.
  report = json.loads((workdir / "export" / "default" / "report.json").read_text())
  assert [m["name"] for m in report["models"]] == ["teacher_float", "student_qat_int8"]
  assert not (workdir / "export" / "default" / "student_float.tflite").exists()
  assert result.stderr.strip() == "", result.stderr
  # Where the time went: each stage's phases in metrics.json and the manifest, the table printed.
  manifest = json.loads((workdir / "manifest.json").read_text())
  for stage in ("teacher", "student/default", "qat/default", "export/default"):
    phases = manifest["stages"][stage]["phases"]
    assert phases == json.loads((workdir / stage / "metrics.json").read_text())["phases"]
    assert phases["total"] == pytest.approx(
        sum(v for k, v in phases.items() if k != "total"), abs=0.01)
    assert phases["total"] <= manifest["stages"][stage]["wall_seconds"] + 0.01
    assert phases["other"] < 0.25 * phases["total"] + 0.5, (stage, phases)
  assert manifest["stages"]["teacher"]["phases"]["training"] > 0
  assert manifest["stages"]["export/default"]["phases"]["conversion"] > 0
  table = result.stdout.split("Wall time by phase")[1]
  assert "training" in table.splitlines()[2] and "conversion" in table.splitlines()[2]
  assert "export/default" in table and "all stages" in table
  again = _run(*args, module="pipelines.cli.pipeline")
  assert again.returncode == 0 and "skipped" in again.stdout
  assert "teacher            skipped" in again.stdout.split("Wall time by phase")[1]


@pytest.mark.skipif(shutil.which("kdprune-teacher") is None,
                    reason="console scripts appear after `pip install -e .`")
def test_console_scripts_are_installed():
  for script in ("kdprune-pipeline", "kdprune-teacher", "kdprune-student", "kdprune-qat",
                 "kdprune-export", "kdprune-sweep", "kdprune-search", "kdprune-predict"):
    result = subprocess.run([script, "--helpshort"], env=ENV, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


def _snapshot(root):
  """Every file under ``root`` with its size and modification time, and the manifest's text."""
  files = {}
  for dirpath, _, names in os.walk(root):
    for name in names:
      path = os.path.join(dirpath, name)
      st = os.stat(path)
      files[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
  return files, open(os.path.join(root, "manifest.json")).read()


# One invocation per class of bad input, against a finished run directory: each must exit 2 with
# one line naming the flag or file, and leave every file of the run as it was.
@pytest.mark.parametrize("module,args,fragment", [
    # ranges
    ("pipelines.cli.student", ["--final_sparsity=1.5"], "--final_sparsity=1.5 must be in [0, 1)"),
    ("pipelines.cli.export", ["--export_baselines=student_fp32"],
     "--export_baselines: unknown student_fp32"),
    ("pipelines.cli.student", ["--alpha=2"], "--alpha=2.0 must be in [0, 1]"),
    ("pipelines.cli.student", ["--temperature=0"], "--temperature=0.0 must be > 0"),
    ("pipelines.cli.student", ["--pruning_begin=0.8", "--pruning_end=0.2"], "must come after"),
    ("pipelines.cli.teacher", ["--teacher_epochs=0"], "--teacher_epochs=0 must be >= 1"),
    ("pipelines.cli.pipeline", ["--batch_size=0"], "--batch_size=0 must be >= 1"),
    ("pipelines.cli.student", ["--student_patience=-1"], "--student_patience=-1 must be >= 0"),
    ("pipelines.cli.qat", ["--qat_learning_rate=0"], "--qat_learning_rate=0.0 must be a positive"),
    # choices
    ("pipelines.cli.pipeline", ["--dataset=mnsit"], "--dataset=mnsit: no such TFDS dataset"),
    ("pipelines.cli.pipeline", ["--student_model=transformer"], "--student_model=transformer"),
    ("pipelines.cli.student", ["--pruning_schedule=cubic"], "--pruning_schedule"),
    ("pipelines.cli.student", ["--pruning_method=rigl"], "--pruning_method"),
    ("pipelines.cli.qat", ["--qat_scheme=fp16"], "--qat_scheme"),
    ("pipelines.cli.student", ["--cache=ram"], "--cache=ram: must be one of auto, memory, disk"),
    # combinations
    ("pipelines.cli.student", ["--pruning_end=100000"], "reaches its final sparsity at step 100000"),
    ("pipelines.cli.student", ["--pruning_structure=m_by_n", "--final_sparsity=0.8"],
     "does not match --m_by_n=2:4"),
    ("pipelines.cli.student", ["--teacher_outputs=cached", "--student_augment=shift"],
     "--teacher_outputs=cached with --student_augment=shift"),
    ("pipelines.cli.student", ["--teacher_topk=3", "--teacher_outputs=online"],
     "--teacher_topk is for cached teacher outputs"),
    ("pipelines.cli.student", ["--pruning_method=dynamic", "--pruning_structure=m_by_n"],
     "--pruning_method=dynamic works with --pruning_structure=unstructured only"),
    ("pipelines.cli.student", ["--pruning_method=dynamic", "--mask_update_end=0.05"],
     "leaves no mask revision"),
    # data flags that prepare the examples unlike the upstream stage's training
    ("pipelines.cli.student", ["--seed=1"], "--seed=1 differs from the teacher's --seed=0"),
    ("pipelines.cli.qat", ["--validation_fraction=0.2"],
     "--validation_fraction=0.2 differs from the student/default's --validation_fraction=0.1"),
    ("pipelines.cli.export", ["--normalization=standardize"],
     "--normalization=standardize differs from the student/default's --normalization=auto"),
    # files
    ("pipelines.cli.pipeline", ["--dataset=npz:/nonexistent/data.npz"], "no such file"),
    ("pipelines.cli.export", ["--student_name=ghost"], "no finished qat/ghost"),
])
@pytest.mark.slow
def test_bad_input_leaves_a_finished_run_untouched(finished_run, module, args, fragment):
  workdir = str(finished_run[0])
  before = _snapshot(workdir)
  result = _run("--workdir=%s" % workdir, *args, module=module)
  program = "kdprune-" + module.split(".")[-1]
  _assert_one_line_error(result, program, fragment)
  assert _snapshot(workdir) == before


@pytest.mark.slow
def test_diverging_training_fails_the_stage_and_keeps_the_teacher(finished_run, tmp_path):
  workdir = tmp_path / "copy"
  shutil.copytree(finished_run[0], workdir)
  teacher_model = (workdir / "teacher" / "model.keras").read_bytes()
  result = _run("--workdir=%s" % workdir, "--student_name=diverge", "--student_optimizer=sgd",
                "--student_learning_rate=1e30", "--student_epochs=2", "--progress=none",
                "--student_model=mlp", "--student_width=32", "--student_depth=1",
                module="pipelines.cli.student")
  assert result.returncode == 1, (result.stdout, result.stderr)
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
  assert lines[0].startswith("kdprune-student: error: student/diverge stage: loss is ")
  assert "lower --student_learning_rate" in lines[0]
  import json
  stages = json.loads((workdir / "manifest.json").read_text())["stages"]
  assert stages["student/diverge"]["status"] == "failed"
  assert stages["teacher"]["status"] == "done" and stages["student/default"]["status"] == "done"
  assert (workdir / "teacher" / "model.keras").read_bytes() == teacher_model
  assert not (workdir / "student" / "diverge" / "model.keras").exists()


@pytest.mark.slow
def test_teacher_trained_on_other_data_is_refused_before_work(finished_run, tmp_path):
  from tests.conftest import write_npz
  data = write_npz(tmp_path / "small.npz", shape=(4, 4, 1), classes=3)
  workdir = str(finished_run[0])
  before = _snapshot(workdir)
  for module in ("pipelines.cli.student", "pipelines.cli.qat"):
    result = _run("--workdir=%s" % workdir, "--dataset=npz:%s" % data, module=module)
    stage = "teacher" if module == "pipelines.cli.student" else "student/default"
    _assert_one_line_error(result, "kdprune-" + module.split(".")[-1],
                           "the %s in" % stage, "trained on digits inputs (8, 8, 1) with 10 classes",
                           "gives (4, 4, 1) with 3 classes")
  assert _snapshot(workdir) == before


@pytest.mark.parametrize("module,program", [("pipelines.cli.teacher", "kdprune-teacher"),
                                            ("pipelines.cli.student", "kdprune-student"),
                                            ("pipelines.cli.pipeline", "kdprune-pipeline")])
def test_unwritable_workdir_is_one_line_before_any_work(module, program, tmp_path):
  """A --workdir that cannot be created is a usage error, not a traceback (issue 17, 11a), and
  it is refused before the data source is read: the embedded dataset is not even prepared (the
  refusal took ~10 s of TensorFlow import and preparation before)."""
  tfds_dir = tmp_path / "tfds"
  tfds_dir.mkdir()
  result = _run("--workdir=/proc/kdprune", module=module,
                env=dict(ENV, TFDS_DATA_DIR=str(tfds_dir)))
  _assert_one_line_error(result, program, "--workdir=/proc/kdprune")
  assert "[teacher] running" not in result.stdout + result.stderr
  assert list(tfds_dir.iterdir()) == [], "the data source was read before the refusal"


@pytest.mark.parametrize("module,fragment", [
    ("pipelines.cli.student", "no finished teacher in"),
    ("pipelines.cli.qat", "no finished student/default in"),
    ("pipelines.cli.export", "no finished qat/default in")])
def test_a_missing_upstream_stage_is_refused_before_the_data_is_read(tmp_path, module, fragment):
  """The manifest says at once that the stage before has not run; the data (TensorFlow, the
  embedded dataset's preparation: ~10 s) is read only after that."""
  tfds_dir = tmp_path / "tfds"
  tfds_dir.mkdir()
  result = _run("--workdir=%s" % (tmp_path / "run"), module=module,
                env=dict(ENV, TFDS_DATA_DIR=str(tfds_dir)))
  _assert_one_line_error(result, "kdprune-" + module.split(".")[-1], fragment)
  assert list(tfds_dir.iterdir()) == [], "the data source was read before the refusal"
  assert not (tmp_path / "run").exists()


def test_workdir_check_creates_nothing(tmp_path):
  from pipelines.config.errors import ConfigError
  from pipelines.runtime import rundir
  rundir.check_workdir(str(tmp_path / "a" / "b"))  # creatable
  assert list(tmp_path.iterdir()) == []
  (tmp_path / "file").write_text("x")
  with pytest.raises(ConfigError, match="not a directory"):
    rundir.check_workdir(str(tmp_path / "file" / "run"))


def test_a_student_with_nothing_to_prune_is_refused_before_the_teacher_trains(tmp_path):
  """One line, exit 2, no run directory: not a teacher's training, then a failure (issue 17, 11b)."""
  rng = __import__("numpy").random.default_rng(0)
  rows = ["a,b,c,d,e,f,g,h,i,j,label"] + [
      ",".join(["%.3f" % v for v in rng.normal(size=10)] + [str(i % 3)]) for i in range(90)]
  data = tmp_path / "t.csv"
  data.write_text("\n".join(rows) + "\n")
  workdir = tmp_path / "run"
  result = _run("--workdir=%s" % workdir, "--dataset=csv:%s" % data, "--target_column=label",
                "--teacher_model=mlp", "--student_model=mlp", "--student_width=6",
                "--student_depth=1", "--pruning_structure=m_by_n", module="pipelines.cli.pipeline")
  _assert_one_line_error(result, "kdprune-pipeline", "no layer of the student would be pruned")
  assert not workdir.exists()
