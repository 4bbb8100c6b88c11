"""tf.distribute: choosing the strategy, and a real two-worker run on localhost."""

import json
import os
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


def test_two_workers_on_localhost_write_one_set_of_artifacts(tmp_path):
  workdir = tmp_path / "run"
  logs = tmp_path / "logs"
  # The workers' temporary files go to a directory of this test's own: other tests' workers,
  # running beside it, make kdprune-worker-* directories in /tmp too.
  tmp = tmp_path / "tmp"
  tmp.mkdir()
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KDPRUNE_LOG_DIR=str(logs),
             KDPRUNE_BASE_PORT=str(_free_port_block(2)), TMPDIR=str(tmp))
  result = subprocess.run(
      [os.path.join(REPO, "launch", "multiworker_local.sh"), "2", sys.executable, "-m",
       "pipelines.cli.pipeline", "--workdir=%s" % workdir, "--until=student",
       "--teacher_model=mlp", "--teacher_width=64", "--teacher_depth=1", "--teacher_epochs=1",
       "--student_model=mlp", "--student_width=32", "--student_depth=1", "--student_epochs=2",
       "--final_sparsity=0.8", "--progress=none"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-2000:],
                                  (logs / "worker-1.log").read_text()[-2000:])
  # Both workers trained (worker 1's log shows the stages), only the chief reported.
  worker1 = (logs / "worker-1.log").read_text()
  assert "[student/default]" in worker1 and "kdprune pipeline finished" not in worker1
  assert "kdprune pipeline finished" in result.stdout
  stages = json.loads((workdir / "manifest.json").read_text())["stages"]
  assert stages["teacher"]["status"] == stages["student/default"]["status"] == "done"
  assert abs(stages["student/default"]["metrics"]["sparsity"] - 0.8) <= 0.005
  # One set of artifacts: exactly what a single-process run writes, no per-worker copies.
  files = sorted(os.path.relpath(os.path.join(d, f), workdir)
                 for d, _, names in os.walk(workdir) for f in names if "/tb/" not in "/" + d + "/")
  # The teacher-output store: each worker computed and wrote its own shard; the chief the index.
  logits = [f for f in files if f.startswith("teacher/logits/")]
  assert sorted(os.path.basename(f) for f in logits) == [
      "meta.json", "values-00000-of-00002", "values-00001-of-00002"], files
  assert len({os.path.dirname(f) for f in logits}) == 1, files
  assert [f for f in files if f not in logits] == [
      # manifest.lock: the lock every manifest update takes (several processes may write it)
      "manifest.json", "manifest.lock", "student/default/config.json",
      "student/default/metrics.json",
      "student/default/metrics.jsonl", "student/default/model.keras", "teacher/config.json",
      "teacher/metrics.json", "teacher/metrics.jsonl", "teacher/model.keras"], files
  assert not [p for p in os.listdir(tmp) if p.startswith("kdprune-worker-")]  # the non-chief's
  # private directory is gone


def test_mixed_precision_trains_in_float16_and_saves_float32(tmp_path):
  import dataclasses

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


def test_a_chief_failing_in_a_non_collective_stage_stops_the_workers(tmp_path):
  """The chief fails in a stage only it runs (like the export): the worker, waiting for it at the
  barrier, exits non-zero with the chief's error instead of waiting forever."""
  results = _two_workers(tmp_path, "fail", timeout=60)
  (chief_rc, chief_err, _), (worker_rc, worker_err, _) = results
  assert chief_rc not in (0, None) and "the chief fails on purpose" in chief_err, chief_err[-1500:]
  assert worker_rc is not None, "the worker was still waiting for the chief after 60 s"
  assert worker_rc != 0 and "the chief failed this stage" in worker_err, worker_err[-1500:]
  assert "the chief fails on purpose" in worker_err


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
