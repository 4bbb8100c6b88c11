"""tf.distribute: choosing the strategy, and a real two-worker run on localhost."""

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from pipelines.config.errors import ConfigError
from pipelines.runtime import distribute
from tests.conftest import REPO

TWO_WORKERS = json.dumps({"cluster": {"worker": ["localhost:1", "localhost:2"]},
                          "task": {"type": "worker", "index": 0}})


@pytest.mark.parametrize("name,gpus,environ,expected", [
    ("auto", 0, {}, "default"),
    ("auto", 1, {}, "default"),
    ("auto", 4, {}, "mirrored"),
    ("auto", 0, {"TF_CONFIG": TWO_WORKERS}, "multi_worker"),
    ("mirrored", 0, {}, "mirrored"),
    ("multi_worker", 0, {"TF_CONFIG": TWO_WORKERS}, "multi_worker"),
])
def test_strategy_resolution(name, gpus, environ, expected):
  assert distribute.resolve_name(name, num_gpus=gpus, environ=environ) == expected


@pytest.mark.parametrize("name,environ,message", [
    ("multi_worker", {}, "--strategy=multi_worker needs TF_CONFIG"),
    ("auto", {"TF_CONFIG": "{cluster"}, "TF_CONFIG is not valid JSON"),
    ("tpu", {}, "--strategy=tpu is not one of"),
])
def test_bad_strategies_are_refused(name, environ, message):
  with pytest.raises(ConfigError, match=message):
    distribute.resolve_name(name, num_gpus=0, environ=environ)


def _free_port_block(n):
  """``n`` consecutive free localhost ports, from a range of this pytest-xdist worker's own.

  A port is only known free until someone binds it, and a cluster binds its ports seconds after
  the test picked them: two xdist workers that both found 30000 free would start their clusters
  on the same ports. Each xdist worker searches its own 2,000 ports, so tests running side by
  side never pick the same block.
  """
  worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
  index = int(worker[2:]) if worker[2:].isdigit() else 0
  start = 30000 + 2000 * (index % 15)
  for base in range(start, start + 2000 - n, n + 1):
    socks = []
    try:
      for i in range(n):
        s = socket.socket()
        socks.append(s)
        s.bind(("localhost", base + i))
      return base
    except OSError:
      continue
    finally:
      for s in socks:
        s.close()
  raise RuntimeError("no free ports")


# A pipeline of every stage small enough for the suite. The student has batch normalization (its
# moving statistics are what a multi-worker strategy all-reduces when they are read: the QAT
# stage's serving function could not be saved over them) and no dropout (each replica would draw
# its own masks: the files would differ as two seeds' do).
TINY_PIPELINE = [
    "--teacher_model=mlp", "--teacher_width=64", "--teacher_depth=1", "--teacher_epochs=3",
    "--student_model=cnn", "--student_width=8", "--student_depth=1", "--student_dropout=0",
    "--student_epochs=4",
    "--final_sparsity=0.8", "--qat_epochs=1", "--latency_runs=5", "--progress=none"]


def _files(workdir):
  """The run directory's files, relative, without TensorBoard's event files."""
  return sorted(os.path.relpath(os.path.join(d, f), workdir)
                for d, _, names in os.walk(workdir) for f in names if "/tb/" not in "/" + d + "/")


def _product(workdir):
  """The product's report entry, its ops and its per-layer zero counts."""
  from pipelines.export import tflite
  export_dir = os.path.join(workdir, "export", "default")
  with open(os.path.join(export_dir, "report.json")) as f:
    entry = next(m for m in json.load(f)["models"] if m["name"] == "student_qat_int8")
  with open(os.path.join(export_dir, "student_qat_int8.tflite"), "rb") as f:
    data = f.read()
  layers = [(l["op"], l["shape"], l["zeros"]) for l in tflite.inspect_weights(data)["layers"]]
  return entry, tflite.inspect_ops(data), layers


def _same_product(one, many):
  """The int8 files of a one-process and a distributed run: the same ops, the same zeros in every
  layer, and test accuracies at most one test example apart."""
  (one_entry, one_ops, one_layers), (entry, ops, layers) = _product(one), _product(many)
  with open(os.path.join(one, "qat", "default", "metrics.json")) as f:
    n_test = json.load(f)["data"]["num_examples"]["test"]
  assert entry["name"] == one_entry["name"] == "student_qat_int8"
  assert ops == one_ops
  assert layers == one_layers
  assert one_entry["test_accuracy"] > 0.5, one_entry  # a trained student: its mistakes mean something
  assert abs(entry["test_accuracy"] - one_entry["test_accuracy"]) * n_test <= 1 + 1e-9, (
      entry["test_accuracy"], one_entry["test_accuracy"])


@pytest.mark.slow
def test_two_workers_on_localhost_run_every_stage_like_one_process(tmp_path):
  """Teacher, student, QAT and export on two workers (the QAT stage's serving SavedModel was once
  traced over the strategy's variables and could not be saved: no test ran past the student):
  one set of artifacts, the same files as a one-process run, the same int8 product."""
  workdir = tmp_path / "run"
  logs = tmp_path / "logs"
  # The workers' temporary files go to a directory of this test's own: other tests' workers,
  # running beside it, make kdprune-worker-* directories in /tmp too.
  tmp = tmp_path / "tmp"
  tmp.mkdir()
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KDPRUNE_LOG_DIR=str(logs),
             KDPRUNE_BASE_PORT=str(_free_port_block(2)), TMPDIR=str(tmp))
  workers = subprocess.Popen(
      [os.path.join(REPO, "launch", "multiworker_local.sh"), "2", sys.executable, "-m",
       "pipelines.cli.pipeline", "--workdir=%s" % workdir] + TINY_PIPELINE,
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  one = subprocess.run(  # the one-process run beside it (preparing digits in a folder of its own)
      [sys.executable, "-m", "pipelines.cli.pipeline", "--workdir=%s" % (tmp_path / "one")
       ] + TINY_PIPELINE, cwd=REPO, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                                             TFDS_DATA_DIR=str(tmp_path / "tfds")),
      capture_output=True, text=True, timeout=600)
  stdout, stderr = workers.communicate(timeout=600)
  assert one.returncode == 0, one.stderr[-2000:]
  assert workers.returncode == 0, (stdout[-2000:], stderr[-2000:],
                                   (logs / "worker-1.log").read_text()[-2000:])
  # Both workers trained (worker 1's log shows the stages), only the chief reported.
  worker1 = (logs / "worker-1.log").read_text()
  assert "[student/default]" in worker1 and "[qat/default]" in worker1, worker1[-2000:]
  assert "kdprune pipeline finished" not in worker1
  assert "kdprune pipeline finished" in stdout
  stages = json.loads((workdir / "manifest.json").read_text())["stages"]
  assert {s: e["status"] for s, e in stages.items()} == {
      "teacher": "done", "student/default": "done", "qat/default": "done",
      "export/default": "done"}
  assert abs(stages["student/default"]["metrics"]["sparsity"] - 0.8) <= 0.005
  # One set of artifacts: exactly what a one-process run writes, no per-worker copies.
  files = _files(workdir)
  # The teacher-output store: each worker computed and wrote its own shard; the chief the index.
  logits = [f for f in files if f.startswith("teacher/logits/")]
  assert sorted(os.path.basename(f) for f in logits) == [
      "meta.json", "values-00000-of-00002", "values-00001-of-00002"], files
  assert len({os.path.dirname(f) for f in logits}) == 1, files
  alone = [f for f in _files(tmp_path / "one") if not f.startswith("teacher/logits/")]
  assert [f for f in files if f not in logits] == alone
  assert "qat/default/saved_model/saved_model.pb" in alone
  assert not [p for p in os.listdir(tmp) if p.startswith("kdprune-worker-")]  # the non-chief's
  # private directory is gone
  _same_product(str(tmp_path / "one"), str(workdir))


@pytest.mark.slow
def test_two_workers_train_every_example_when_a_last_batch_leaves_a_replica_empty(tmp_path):
  """Splits of 33, 17 and 17 examples in global batches of 16: every split's last batch holds
  one example, so one of the two workers gets none. Teacher and student are batch-normalized
  CNNs: the teacher (Keras' compiled loss and train step) died in its first epoch (an empty batch
  through oneDNN's convolution, then "scale must have the same number of elements as the
  channels of x" at the first batch norm), the student the same way once it had batch norm, and
  the student's and QAT's losses (a mean per replica) were NaN before that. Every stage now
  finishes with finite losses, counts every example once in its logged accuracies, and logs the
  validation loss the saved model has."""
  import numpy as np
  rng = np.random.default_rng(0)
  arrays = {}
  counts = {"train": 33, "val": 17, "test": 17}
  for split, n in counts.items():
    arrays["y_" + split] = rng.integers(0, 3, n)
    arrays["x_" + split] = (rng.random((n, 8, 8, 1)) + arrays["y_" + split][:, None, None, None]
                            ).astype(np.float32)
  np.savez(tmp_path / "data.npz", **arrays)
  workdir = tmp_path / "run"
  tmp = tmp_path / "tmp"
  tmp.mkdir()
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KDPRUNE_LOG_DIR=str(tmp_path / "logs"),
             KDPRUNE_BASE_PORT=str(_free_port_block(2)), TMPDIR=str(tmp))
  result = subprocess.run(
      [os.path.join(REPO, "launch", "multiworker_local.sh"), "2", sys.executable, "-m",
       "pipelines.cli.pipeline", "--workdir=%s" % workdir,
       "--dataset=npz:%s" % (tmp_path / "data.npz"), "--batch_size=16",
       "--teacher_model=cnn", "--teacher_width=8", "--teacher_depth=1", "--teacher_dropout=0",
       "--teacher_epochs=2", "--student_model=cnn", "--student_width=4", "--student_depth=1",
       "--student_dropout=0", "--student_epochs=2", "--final_sparsity=0.5", "--qat_epochs=1",
       "--latency_runs=2", "--representative_examples=8", "--progress=none"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-2000:])
  stages = json.loads((workdir / "manifest.json").read_text())["stages"]
  assert all(e["status"] == "done" for e in stages.values()) and len(stages) == 4, stages
  for stage in ("teacher", "student/default", "qat/default"):
    logged = [json.loads(line) for line in (workdir / stage / "metrics.jsonl").open()]
    values = [v for row in logged for k, v in row.items() if "loss" in k]
    assert values and all(np.isfinite(values)), (stage, logged)
    for row in logged:  # counts of examples over 33 and 17: none lost, none counted twice
      for key, n in (("accuracy", counts["train"]), ("val_accuracy", counts["val"])):
        assert row[key] * n == pytest.approx(round(row[key] * n), abs=1e-3), (stage, key, row)
    metrics = stages[stage]["metrics"]
    assert np.isfinite(metrics["test_loss"]) and metrics["test_accuracy"] > 0, (stage, metrics)
    best = logged[metrics["best_epoch"] - 1]  # its logged val_loss is the saved model's
    assert best["val_loss"] == pytest.approx(metrics["val_loss"], rel=1e-4), (stage, best)


def _bn_pipeline():
  """Every stage, tiny, with a batch-normalized CNN student (its moving statistics are the
  variables a strategy all-reduces when they are read)."""
  from models.registry import ModelSpec
  from pipelines.stages import pipeline
  from tests import conftest
  pupil = conftest.tiny_student_config(epochs=4)
  return pipeline.PipelineConfig(
      teacher=conftest.tiny_teacher_config(epochs=3),
      student=dataclasses.replace(pupil, model=ModelSpec("cnn", width=8, depth=1, dropout=0.0)),
      qat=conftest.tiny_qat_config(), export=conftest.tiny_export_config())


@pytest.mark.slow
def test_qat_and_export_under_two_mirrored_devices_give_the_one_process_product(tmp_path):
  """QAT and export in one process with two logical CPU devices under MirroredStrategy (the
  student and teacher trained before, in one process): the same int8 product as QAT and export
  run without a strategy from the same student."""
  from pipelines.stages import pipeline
  first = tmp_path / "first"
  config = _bn_pipeline()
  pipeline.run(dataclasses.replace(config, until="student"), str(first), log=lambda *_: None)
  shutil.copytree(first, tmp_path / "mirrored")
  child = subprocess.Popen(
      [sys.executable, "-m", "tests.mirrored_stages", str(tmp_path / "mirrored")], cwd=REPO,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)
  outcomes = pipeline.run(config, str(first), log=lambda *_: None)  # the one-process QAT + export
  assert [o.ran for o in outcomes] == [False, False, True, True]
  stdout, stderr = child.communicate(timeout=600)
  assert child.returncode == 0 and "replicas: 2" in stdout, stderr[-3000:]
  assert "ran: teacher=False student/default=False qat/default=True export/default=True" in stdout
  assert _files(tmp_path / "mirrored") == _files(first)
  _same_product(str(first), str(tmp_path / "mirrored"))


@pytest.mark.slow
def test_mixed_precision_trains_in_float16_and_saves_float32(tmp_path):
  from models.compat import keras
  from pipelines.stages import pipeline
  from tests.conftest import (
    tiny_export_config,
    tiny_qat_config,
    tiny_student_config,
    tiny_teacher_config,
  )
  teacher = tiny_teacher_config(epochs=2)
  pupil = tiny_student_config(epochs=3)
  config = pipeline.PipelineConfig(
      teacher=dataclasses.replace(teacher, train=dataclasses.replace(teacher.train,
                                                                     mixed_precision=True)),
      student=dataclasses.replace(pupil, train=dataclasses.replace(pupil.train,
                                                                   mixed_precision=True)),
      qat=tiny_qat_config(), export=tiny_export_config())
  outcomes = pipeline.run(config, str(tmp_path), log=lambda *_: None)
  assert all(o.ran for o in outcomes)
  assert keras.mixed_precision.global_policy().name == "float32"  # restored after each stage
  m = outcomes[1].entry["metrics"]
  assert m["mixed_precision"] and abs(m["sparsity"] - 0.8) <= 0.005
  import zipfile
  for stage, metrics in (("teacher", outcomes[0].entry["metrics"]), ("student/default", m)):
    assert metrics["optimizer"].startswith("LossScaleOptimizer"), metrics["optimizer"]
    with zipfile.ZipFile(tmp_path / stage / "model.keras") as archive:
      saved = archive.read("config.json").decode()
    assert "mixed_float16" not in saved and '"float32"' in saved  # saved float32
  report = json.loads((tmp_path / "export" / "default" / "report.json").read_text())
  assert report["models"][-1]["weight_dtypes"] == ["int8"]


def _two_workers(tmp_path, mode, timeout=90):
  """Runs tests/multiworker_execute.py as 2 workers on localhost; ``[(rc, stderr, record)]``.

  A worker still running after ``timeout`` seconds is killed and reported with rc None.
  """
  base = _free_port_block(2)
  hosts = ["localhost:%d" % (base + i) for i in range(2)]
  procs = []
  for i in range(2):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_CONFIG=json.dumps(
        {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}}))
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "tests.multiworker_execute", mode, str(tmp_path / "run"),
         str(tmp_path / ("worker-%d.json" % i))], cwd=REPO, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
  results = []
  import time
  deadline = time.time() + timeout
  for i, p in enumerate(procs):
    try:
      _, err = p.communicate(timeout=max(1, deadline - time.time()))
      rc = p.returncode
    except subprocess.TimeoutExpired:
      p.kill()
      _, err = p.communicate()
      rc = None
    path = tmp_path / ("worker-%d.json" % i)
    results.append((rc, err, json.loads(path.read_text()) if path.exists() else None))
  return results


@pytest.mark.slow
def test_workers_decide_after_the_chief_marked_the_stage_running(tmp_path):
  """A killed run left the stage "running" with the old flag's fingerprint (and its backup); the
  rerun with a changed flag must not let a worker see that old fingerprint (and resume the old
  backup) while the chief starts fresh: workers read the manifest after the chief's mark."""
  from pipelines.runtime import rundir
  from tests import multiworker_execute as helper
  run = rundir.RunDir(str(tmp_path / "run"))
  old_fp = rundir.fingerprint({"flag": 1})
  run.mark_running(helper.STAGE, old_fp, {"flag": 1})  # the killed run
  results = _two_workers(tmp_path, "race")
  assert [r[0] for r in results] == [0, 0], [r[1][-1500:] for r in results]
  new_fp = rundir.fingerprint(helper.INPUTS)
  assert results[0][2]["chief"] and not results[1][2]["chief"]
  assert results[1][2]["seen"] == {"status": "running", "fingerprint": new_fp}, results[1][2]
  assert run.entry(helper.STAGE)["status"] == "done"


@pytest.mark.slow
def test_a_chief_failing_in_a_non_collective_stage_stops_the_workers(tmp_path):
  """The chief fails in a stage only it runs (like the export): the worker, waiting for it at the
  barrier, exits non-zero with the chief's error instead of waiting forever."""
  results = _two_workers(tmp_path, "fail", timeout=60)
  (chief_rc, chief_err, _), (worker_rc, worker_err, _) = results
  assert chief_rc not in (0, None) and "the chief fails on purpose" in chief_err, chief_err[-1500:]
  assert worker_rc is not None, "the worker was still waiting for the chief after 60 s"
  assert worker_rc != 0 and "the chief failed this stage" in worker_err, worker_err[-1500:]
  assert "the chief fails on purpose" in worker_err


@pytest.mark.slow
def test_a_worker_failing_in_a_collective_stage_ends_every_worker_with_its_cause(tmp_path):
  """The non-chief worker fails inside a collective stage while the chief waits in one of the
  stage's collectives: each process ends with one line naming the stage and the worker's cause
  (no traceback on the terminal); the worker's traceback is kept beside the chief's error.txt."""
  results = _two_workers(tmp_path, "worker_fails", timeout=120)
  (chief_rc, chief_err, chief), (worker_rc, worker_err, worker) = results
  assert chief_rc is not None and worker_rc is not None, (chief_err[-1500:], worker_err[-1500:])
  assert chief_rc != 0 and worker_rc != 0
  for err, record in ((chief_err, chief), (worker_err, worker)):
    assert "Traceback" not in err, err[-1500:]
    assert "stage stage: " in record["error"], record
    assert "worker 1" in record["error"] and "ValueError: the worker fails on purpose" in (
        record["error"]), record
  stage_dir = tmp_path / "run" / "stage"
  kept = (stage_dir / "error-worker-1.txt").read_text()
  assert kept.startswith("worker 1: ValueError: the worker fails on purpose")
  assert "Traceback" in kept and "multiworker_execute.py" in kept
  assert (stage_dir / "error.txt").exists()  # the chief's own traceback (its collective failed)
  from pipelines.runtime import rundir
  entry = rundir.RunDir(str(tmp_path / "run")).entry("stage")
  assert entry["status"] == "failed" and "the worker fails on purpose" in entry["error"]


def test_finish_waits_for_the_peers_and_ignores_one_that_has_left(monkeypatch):
  """The exit handshake (issue 20's CI failure: the chief's last barrier aborted because the
  worker, done with it, had exited): one more barrier, whose failure only means a peer left."""
  from models.compat import tf
  calls = []

  def peer_gone():
    calls.append("barrier")
    raise tf.errors.UnavailableError(None, None, "tasks unhealthy (stopped sending heartbeats)")

  monkeypatch.setattr(distribute, "barrier", peer_gone)
  monkeypatch.setitem(distribute._STATE, "strategy", object())
  monkeypatch.setitem(distribute._STATE, "name", "multi_worker")
  distribute.finish()  # does not raise
  assert calls == ["barrier"]
  monkeypatch.setitem(distribute._STATE, "name", "mirrored")
  distribute.finish()  # one process: nothing to wait for
  assert calls == ["barrier"]
