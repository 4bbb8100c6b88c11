"""kdprune-search (issue 21): bisection, the budget on validation, resuming, parallel tasks, the
launchers' task commands, bad input, and the manifest's lock."""

import json
import math
import os
import re
import shutil
import subprocess
import sys

import pytest

from pipelines.config import SearchConfig
from pipelines.config.errors import ConfigError
from pipelines.stages import search
from tests.conftest import REPO

FLAGS = [
    "--dataset=digits", "--teacher_model=mlp", "--teacher_width=32", "--teacher_depth=1",
    "--teacher_epochs=4", "--teacher_learning_rate=0.01", "--teacher_patience=0",
    "--student_model=mlp", "--student_width=16", "--student_depth=1", "--student_epochs=3",
    "--student_learning_rate=0.01", "--student_patience=0", "--qat_epochs=1", "--qat_patience=0",
    "--pruning_begin=0.0", "--pruning_end=0.5", "--pruning_frequency=5", "--latency_runs=5",
    "--latency_warmup=1", "--representative_examples=32", "--progress=none",
    "--export_baselines=none",
    # Two chains: unstructured (0.5, then 0.9: the bracket is then narrower than 0.5) and 2:4.
    "--structures=unstructured,m_by_n", "--search_sparsity_range=0.5,0.9",
    "--search_tolerance=0.5", "--max_drop=40",
]


def _cli(*args, env=None, check=True):
  proc = subprocess.run([sys.executable, "-m", "pipelines.cli.search", *args], cwd=REPO,
                        capture_output=True, text=True, env=env, timeout=600)
  if check:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return proc


def _ran(output: str):
  return re.findall(r"\[([^\]]+)\] running ->", output)


# -- bisection, a pure function -------------------------------------------------------------------

@pytest.mark.parametrize("edge", [0.55, 0.83, 0.97])
def test_bisection_finds_the_largest_value_within_budget_in_log_evaluations(edge):
  calls = []

  def within(x):  # accuracy falls monotonically with sparsity; the budget holds up to ``edge``
    calls.append(x)
    return x <= edge

  best, tried = search.bisect(within, 0.5, 0.98, tolerance=0.01)
  assert tried == calls and len(set(tried)) == len(tried)  # nothing evaluated twice
  assert edge - 0.01 <= best <= edge
  assert len(tried) <= 2 + math.ceil(math.log2((0.98 - 0.5) / 0.01))  # 8, not a 48-point grid


def test_bisection_abandons_a_chain_whose_first_point_is_out_of_budget():
  best, tried = search.bisect(lambda x: False, 0.5, 0.98, tolerance=0.01)
  assert best is None and tried == [0.5]


def test_bisection_stops_at_the_top_when_it_is_within_budget():
  best, tried = search.bisect(lambda x: True, 0.5, 0.98, tolerance=0.01)
  assert best == 0.98 and tried == [0.5, 0.98]


@pytest.mark.parametrize("kwargs,message", [
    (dict(max_drop=-0.1), "--max_drop=-0.1 must be >= 0"),
    (dict(max_drop=0.0), "int8 .tflite never matches"),
    (dict(objective="speed"), "--objective=speed"),
    (dict(structures=("blocks",)), "--structures=blocks"),
    (dict(sparsity_range=(0.9, 0.5)), "--search_sparsity_range=0.9,0.5"),
    (dict(channel_range=(0.0, 0.5)), "--search_channel_range=0.0,0.5"),
    (dict(tolerance=0.0), "--search_tolerance=0.0"),
    (dict(task_index=2, num_tasks=2), "--task_index=2"),
])
def test_bad_search_configs_are_refused(kwargs, message):
  with pytest.raises(ConfigError, match=re.escape(message)):
    SearchConfig(**kwargs).validate()


def test_chains_are_split_between_tasks():
  config = SearchConfig(widths=(8, 16), num_tasks=4)
  chains = config.chains()
  assert len(chains) == 6
  split = [SearchConfig(widths=(8, 16), num_tasks=4, task_index=i).my_chains() for i in range(4)]
  assert sorted(c for part in split for c in part) == sorted(chains)
  assert [len(p) for p in split] == [2, 2, 1, 1]


# -- bad input on the command line ----------------------------------------------------------------

@pytest.mark.parametrize("flags,message", [
    (["--max_drop=-1"], "--max_drop=-1.0 must be >= 0"),
    (["--max_drop=0"], "--max_drop=0 admits no student"),
    (["--structures=blocks"], "--structures=blocks"),
    (["--search_sparsity_range=0.5"], "--search_sparsity_range=0.5 must be lo,hi"),
    (["--parallel=2", "--task_index=1", "--num_tasks=2"], "--parallel=2 runs its own tasks"),
])
def test_bad_input_exits_2_with_one_line_and_leaves_the_run_directory_untouched(tmp_path, flags,
                                                                                 message):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "keep.txt").write_text("x")
  proc = _cli("--workdir=%s" % workdir, "--dataset=digits", *flags, check=False)
  assert proc.returncode == 2, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and message in lines[0], proc.stderr
  assert sorted(os.listdir(workdir)) == ["keep.txt"]


# -- the manifest's lock --------------------------------------------------------------------------

_HAMMER = """
import sys
from pipelines.runtime import rundir
run = rundir.RunDir(sys.argv[1])
for i in range(int(sys.argv[3])):
  run._update("%s/%d" % (sys.argv[2], i), status="done", value=i)
"""


def test_two_processes_updating_the_manifest_lose_no_entry(tmp_path):
  """Without ``manifest.lock`` one process's load-modify-write overwrites the other's entries."""
  n = 150
  procs = [subprocess.Popen([sys.executable, "-c", _HAMMER, str(tmp_path), who, str(n)],
                            cwd=REPO) for who in ("a", "b")]
  assert [p.wait(timeout=300) for p in procs] == [0, 0]
  stages = json.loads((tmp_path / "manifest.json").read_text())["stages"]
  for who in ("a", "b"):
    assert sorted(int(k.split("/")[1]) for k in stages if k.startswith(who + "/")) == list(
        range(n))


# -- tiny real searches ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def searched(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("search")
  proc = _cli("--workdir=%s" % workdir, *FLAGS)
  return workdir, proc.stdout + proc.stderr


def _result(workdir):
  return json.loads((workdir / "search" / "search.json").read_text())


@pytest.mark.slow
def test_a_tiny_search_picks_a_student_within_budget_on_validation(searched):
  workdir, output = searched
  out = _result(workdir)
  names = [c["student"] for c in out["candidates"]]
  assert names == ["s0.500_unstructured_w16", "s0.900_unstructured_w16", "m_by_n_2-4_w16"]
  assert out["students_trained"] == 3
  best = out["best"]
  assert best is not None and best["name"] in names
  threshold = out["budget"]["threshold_val_accuracy"]
  assert best["within_budget"] and best["val_accuracy"] >= threshold - 1e-9
  assert 0.0 < best["test_accuracy"] <= 1.0  # the test figure, reported beside the choice
  # The budget in examples, and the choice's drop on test read against it.
  assert out["budget"]["validation_examples"] == 144 and out["budget"]["examples"] == 57.6
  assert "--max_drop=40 points is 57.6 of the 144 validation examples" in output
  drop = 100 * (out["teacher"]["test_accuracy"] - best["test_accuracy"])  # no teacher .tflite here
  assert best["test_drop"] == pytest.approx(drop, abs=1e-3)
  assert best["test_over_budget"] == (drop > 40)
  exported = [c for c in out["candidates"] if c["abandoned"] is None]
  within = [c for c in exported if c["within_budget"]]
  assert best["tflite_gzip_bytes"] <= 1.01 * min(c["tflite_gzip_bytes"] for c in within)
  for c in out["candidates"]:  # abandoned early, or judged by its .tflite on validation
    assert c["abandoned"] or "val_accuracy" in c
  # The validation figure is the .tflite's, not the Keras one.
  report = json.loads((workdir / "search" / "best" / "report.json").read_text())
  assert report["student"] == best["name"]
  assert (workdir / "search" / "best" / "student_qat_int8.tflite").exists()
  assert json.loads((workdir / "search" / "best" / "choice.json").read_text())["name"] == \
      best["name"]
  md = (workdir / "search" / "search.md").read_text()
  assert "**Best: %s**" % best["name"] in md and "m_by_n_2-4_w16" in md
  assert (workdir / "search" / "pareto.png").read_bytes()[:4] == b"\x89PNG"
  assert _ran(output).count("teacher") == 1


@pytest.mark.slow
def test_a_rerun_reuses_every_finished_student(searched):
  workdir, _ = searched
  before = _result(workdir)
  shutil.rmtree(workdir / "search" / "chains")  # as if killed before the chains were recorded
  proc = _cli("--workdir=%s" % workdir, *FLAGS)
  assert _ran(proc.stdout + proc.stderr) == []  # no stage ran again
  after = _result(workdir)
  assert after["best"]["name"] == before["best"]["name"]
  assert [c["student"] for c in after["candidates"]] == [c["student"] for c in
                                                         before["candidates"]]


def test_sizes_within_a_percent_tie_and_validation_breaks_the_tie():
  from pipelines.stages import search as search_lib
  a = {"student": "a", "tflite_gzip_bytes": 2703, "val_accuracy": 0.68, "latency_ms": 0.010}
  b = {"student": "b", "tflite_gzip_bytes": 2701, "val_accuracy": 0.58, "latency_ms": 0.011}
  c = {"student": "c", "tflite_gzip_bytes": 2000, "val_accuracy": 0.55, "latency_ms": 0.020}
  # Two bytes apart (what separates one file converted in two processes): the more accurate wins.
  assert search_lib.choose([b, a], "size", "accuracy", True)["student"] == "a"
  assert search_lib.choose([a, b, c], "size", "accuracy", True)["student"] == "c"  # truly smaller
  assert search_lib.choose([a, b, c], "latency", "accuracy", True)["student"] == "a"
  assert search_lib.choose([], "size", "accuracy", True) is None


def _with_teacher_of(source, target):
  """A run directory holding only ``source``'s teacher (its stage folder and manifest entry)."""
  target.mkdir()
  shutil.copytree(source / "teacher", target / "teacher")
  manifest = json.loads((source / "manifest.json").read_text())
  manifest["stages"] = {"teacher": manifest["stages"]["teacher"]}
  (target / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.slow
def test_two_local_processes_make_the_same_choice_as_one(searched, tmp_path):
  workdir, _ = searched
  parallel = tmp_path / "parallel"
  _with_teacher_of(workdir, parallel)
  proc = _cli("--workdir=%s" % parallel, *FLAGS, "--parallel=2")
  assert "task 1 of 2 started" in proc.stdout + proc.stderr
  one, two = _result(workdir), _result(parallel)
  assert two["best"]["name"] == one["best"]["name"]
  assert sorted(c["student"] for c in two["candidates"]) == sorted(
      c["student"] for c in one["candidates"])
  stages = json.loads((parallel / "manifest.json").read_text())["stages"]
  for c in two["candidates"]:
    kinds = ("student",) if c["abandoned"] else ("student", "qat", "export")
    for kind in kinds:
      assert stages["%s/%s" % (kind, c["student"])]["status"] == "done"
  assert stages["teacher"] == json.loads((workdir / "manifest.json").read_text())[
      "stages"]["teacher"]  # the one teacher, not retrained
  assert sorted(os.listdir(parallel / "search" / "logs")) == ["task-0.log", "task-1.log"]


def _k8s_command():
  """The Indexed Job's container command and its environment (the yaml, read as text)."""
  text = open(os.path.join(REPO, "launch", "k8s", "search-indexed-job.yaml")).read()
  command = re.search(r"^\s*- (exec bash launch/search_task\.sh .*)$", text, re.M).group(1)
  env = dict(re.findall(r"- name: (\w+)\n\s+value: \"?([^\"\n]*)\"?", text))
  completions = int(re.search(r"completions: (\d+)", text).group(1))
  assert "completionMode: Indexed" in text and int(env["SEARCH_TASKS"]) == completions
  assert re.search(r"parallelism: %d" % completions, text)
  return command


@pytest.mark.slow
def test_slurm_and_kubernetes_task_commands_run_index_by_index(searched, tmp_path):
  """The launchers' commands, run locally on a copy of the tiny search's run directory (its
  students reused: training in tasks is the --parallel test's)."""
  workdir, _ = searched
  run = tmp_path / "cluster"
  shutil.copytree(workdir, run, ignore=shutil.ignore_patterns("search"))
  env = dict(os.environ, PYTHON=sys.executable)
  # Task 0 as the SLURM array runs it, task 1 as the Kubernetes Indexed Job runs it.
  slurm = subprocess.run(
      ["bash", os.path.join(REPO, "launch", "search_slurm.sbatch"), *FLAGS], cwd=REPO,
      env=dict(env, WORKDIR=str(run), SLURM_ARRAY_TASK_ID="0", SLURM_ARRAY_TASK_COUNT="2",
               SLURM_SUBMIT_DIR=REPO), capture_output=True, text=True, timeout=600)
  assert slurm.returncode == 0, slurm.stderr[-3000:]
  assert "waiting for chain(s) m_by_n_w16" in slurm.stdout + slurm.stderr
  assert not (run / "search" / "search.json").exists()
  k8s = subprocess.run(
      ["bash", "-c", _k8s_command()], cwd=REPO,
      env=dict(env, JOB_COMPLETION_INDEX="1", SEARCH_TASKS="2", SEARCH_WORKDIR=str(run),
               SEARCH_FLAGS=" ".join(FLAGS)), capture_output=True, text=True, timeout=600)
  assert k8s.returncode == 0, k8s.stderr[-3000:]
  output = k8s.stdout + k8s.stderr
  assert _ran(output) == [] and "[student/m_by_n_2-4_w16] done already" in output
  assert "[student/s0." not in output  # task 1: the 2:4 chain alone
  # The last task to finish collected; the collect step agrees with it.
  assert _result(run)["best"]["name"] == _result(workdir)["best"]["name"]
  collect = subprocess.run(
      ["bash", os.path.join(REPO, "launch", "search_task.sh"), "collect", "2", str(run), *FLAGS],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert collect.returncode == 0, collect.stderr[-3000:]
  assert _ran(collect.stdout + collect.stderr) == []
  assert _result(run)["best"]["name"] == _result(workdir)["best"]["name"]


def test_a_budget_of_a_few_validation_examples_is_said_and_warned(tmp_path):
  """--max_drop=1 on digits is 1.4 of 144 validation examples: a new user's search chose a
  student 1.67 points below the teacher on test, silently."""
  from pipelines.config import PipelineConfig  # pylint: disable=g-import-not-at-top
  (tmp_path / "manifest.json").write_text(json.dumps(
      {"stages": {"teacher": {"status": "done", "metrics": {"val_accuracy": 0.97}}}}))
  judge = search._Judge(PipelineConfig(), SearchConfig(max_drop=1.0), str(tmp_path))
  lines = judge.budget_lines()
  assert lines[0] == "[search] --max_drop=1 points is 1.4 of the 144 validation examples"
  assert "warning: a budget of 1.4 validation examples" in lines[1]
  assert "raise --validation_fraction (now 0.1)" in lines[1]
  assert judge.budget()["examples"] == 1.44
  assert len(search._Judge(PipelineConfig(), SearchConfig(max_drop=5.0),
                           str(tmp_path)).budget_lines()) == 1  # 7.2 examples: no warning
  assert PipelineConfig().export.data.dataset == "digits"


@pytest.mark.parametrize("task,teacher_val,max_drop,inside,outside", [
    ("classification", 0.95, 0.5, 0.945, 0.9449),  # points of accuracy
    ("regression", 2.0, 0.1, 2.2, 2.21),  # MSE at most 1.1x the teacher's
])
def test_the_budget_is_points_for_classification_and_an_mse_ratio_for_regression(
    tmp_path, task, teacher_val, max_drop, inside, outside):
  import dataclasses  # pylint: disable=g-import-not-at-top
  from pipelines.config import DataConfig, PipelineConfig, StudentConfig  # pylint: disable=g-import-not-at-top
  metric = "mse" if task == "regression" else "accuracy"
  (tmp_path / "manifest.json").write_text(json.dumps(
      {"stages": {"teacher": {"status": "done", "metrics": {"val_" + metric: teacher_val}}}}))
  student = dataclasses.replace(StudentConfig(), data=DataConfig(task=task))
  judge = search._Judge(PipelineConfig(student=student), SearchConfig(max_drop=max_drop),
                        str(tmp_path))
  assert judge.within(inside) and not judge.within(outside)
  assert judge.budget()["teacher_val_" + metric] == teacher_val


@pytest.mark.slow
def test_a_size_budget_chooses_the_most_accurate_student_that_fits(searched, tmp_path):
  """--max_gzip_bytes, the dual of --max_drop: among the int8 files that fit, the best on
  validation; a chain is bisected from its sparsest end (the sparser, the smaller)."""
  workdir = tmp_path / "copy"
  shutil.copytree(searched[0], workdir)
  flags = [f for f in FLAGS if not f.startswith("--max_drop")]
  # Everything fits: both ends of the chain are exported (a student the accuracy budget had
  # abandoned after pruning goes through QAT and export now).
  _cli("--workdir=%s" % workdir, *flags, "--max_gzip_bytes=100000000")
  first = {c["student"]: c for c in _result(workdir)["candidates"]}
  sizes = sorted(first[n]["tflite_gzip_bytes"] for n in ("s0.500_unstructured_w16",
                                                         "s0.900_unstructured_w16"))
  assert sizes[0] < sizes[1]
  budget = (sizes[0] + sizes[1]) // 2  # the sparser file fits, the denser one does not
  proc = _cli("--workdir=%s" % workdir, *flags, "--max_gzip_bytes=%d" % budget)
  assert _ran(proc.stdout + proc.stderr) == []  # every candidate was exported by the first search
  out = _result(workdir)
  assert [c["student"] for c in out["candidates"]][:2] == [
      "s0.900_unstructured_w16", "s0.500_unstructured_w16"]  # the sparsest end first
  for c in out["candidates"]:
    assert c["within_budget"] == (c["tflite_gzip_bytes"] <= budget), c
  fits = [c for c in out["candidates"] if c["within_budget"]]
  best = max(fits, key=lambda c: (c["val_accuracy"], -c["tflite_gzip_bytes"]))
  assert out["best"]["name"] == best["student"]
  assert out["budget"]["max_gzip_bytes"] == budget and "test_over_budget" not in out["best"]
  assert "at most {:,} bytes gzipped".format(budget) in (
      workdir / "search" / "search.md").read_text()


@pytest.mark.parametrize("flags,message", [
    (["--max_gzip_bytes=5000", "--max_drop=1"], "two budgets: give one"),
    (["--max_gzip_bytes=5000", "--objective=latency"], "--objective=latency does not apply"),
    (["--max_gzip_bytes=-3"], "--max_gzip_bytes"),
])
def test_a_size_budget_is_refused_with_another_budget_or_objective(tmp_path, flags, message):
  proc = _cli("--workdir=%s" % (tmp_path / "run"), "--dataset=digits", *flags, check=False)
  assert proc.returncode == 2, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and message in lines[0], proc.stderr
  assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_search_over_keras3_students(tmp_path):
  """``kdprune-search --student_keras=3``: the chain's student is a Keras 3 model pruned by
  kdprune's own backend, and the choice is its int8 file."""
  workdir = tmp_path / "run"
  proc = _cli("--workdir=%s" % workdir, *FLAGS, "--structures=m_by_n", "--student_keras=3")
  out = _result(workdir)
  assert [c["student"] for c in out["candidates"]] == ["m_by_n_2-4_w16"]
  manifest = json.loads((workdir / "manifest.json").read_text())["stages"]
  assert manifest["student/m_by_n_2-4_w16"]["metrics"]["pruning_backend"] == "keras3"
  assert manifest["student/m_by_n_2-4_w16"]["metrics"]["m_by_n_applied_step"] is not None
  assert out["best"] is not None and out["best"]["name"] == "m_by_n_2-4_w16"
  assert (workdir / "search" / "best" / "student_qat_int8.tflite").exists()
  assert _ran(proc.stdout + proc.stderr).count("teacher") == 1
