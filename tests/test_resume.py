"""Resume inside a stage: SIGKILL in the middle of training, rerun, continue from the last backup."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

# Every epoch backed up (by default a single process waits 30 s between backups).
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KDPRUNE_BACKUP_SECONDS="0")


def _start(args):
  return subprocess.Popen([sys.executable, "-m", "pipelines.cli.student", *args], cwd=REPO, env=ENV,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _latest_epoch(workdir):
  path = os.path.join(workdir, "student", "default", "backup", "latest.json")
  try:
    with open(path) as f:
      return json.load(f)["epoch"]
  except (OSError, ValueError):
    return 0


def _kill_after_epoch(args, workdir, epoch: int) -> int:
  """Starts the student, SIGKILLs it once its backup holds ``epoch`` epochs; returns the epochs
  the backup holds then."""
  proc = _start(args)
  deadline = time.time() + 240
  while _latest_epoch(workdir) < epoch and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert proc.poll() is None, "finished before the kill: %s" % proc.communicate()[1][-2000:]
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  return _latest_epoch(workdir)


@pytest.mark.slow
@pytest.mark.parametrize("method,student_keras", [("magnitude", 2), ("dynamic", 2),
                                                  ("dynamic", 3)])
def test_student_killed_mid_training_resumes_from_its_backup(tmp_path, method, student_keras):
  """(A Keras 3 student: its masks, pruning step and revision counters come back too.)"""
  workdir = str(tmp_path / "run")
  # A hard-label student (no teacher needed) on 384 digits (6 steps per epoch), pruning from 10%
  # to 60% of 20 epochs, so the kill lands while the masks are still moving.
  args = ["--workdir=%s" % workdir, "--nodistill", "--train_examples=384",
          "--student_model=mlp", "--student_width=32",
          "--student_depth=1", "--student_epochs=20", "--student_patience=0",
          "--pruning_begin=0.1", "--pruning_end=0.6", "--final_sparsity=0.8", "--progress=epoch",
          "--steps_per_execution=1", "--pruning_method=%s" % method, "--mask_update_every=20",
          "--student_keras=%d" % student_keras]
  killed_after = _kill_after_epoch(args, workdir, 4)
  assert 4 <= killed_after < 20
  manifest = json.loads(open(os.path.join(workdir, "manifest.json")).read())
  assert manifest["stages"]["student/default"]["status"] == "running"  # killed: never marked done

  rerun = subprocess.run([sys.executable, "-m", "pipelines.cli.student", *args], cwd=REPO, env=ENV,
                         capture_output=True, text=True, timeout=300)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert "resuming after epoch %d" % killed_after in rerun.stdout
  # Keras numbers the first resumed epoch after the backup, not 1.
  assert "Epoch %d/20" % (killed_after + 1) in rerun.stdout
  assert "Epoch 1/20" not in rerun.stdout
  entry = json.loads(open(os.path.join(workdir, "manifest.json")).read())["stages"]["student/default"]
  assert entry["status"] == "done"
  m = entry["metrics"]
  assert m.get("pruning_backend", "tfmot") == ("keras3" if student_keras == 3 else "tfmot")
  assert m["resumed_after_epoch"] == killed_after and m["epochs_run"] == 20
  assert abs(m["sparsity"] - 0.8) <= 0.005
  # The pruning step carried over: the schedule ends at 60% of 20 epochs, as without the kill
  # (a step restarted from 0 at the resume would end it 4+ epochs later).
  assert m["first_final_sparsity_epoch"] == 12
  lines = [json.loads(l) for l in open(os.path.join(workdir, "student", "default",
                                                    "metrics.jsonl"))]
  assert [l["epoch"] for l in lines] == list(range(1, 21))
  assert not os.path.exists(os.path.join(workdir, "student", "default", "backup"))
  if method == "dynamic":  # the revision counters came back with the backup
    steps = json.loads(open(os.path.join(workdir, "student", "default", "metrics.json")).read())[
        "pruning"]["steps"]
    every = steps["mask_update_every"]
    assert m["mask_revisions"] == len(range(steps["mask_update_begin"] + every,
                                            steps["mask_update_end"], every)) > 0


@pytest.mark.slow
def test_a_channels_student_killed_after_losing_units_resumes_at_its_smaller_size(tmp_path):
  workdir = str(tmp_path / "run")
  # 32 hidden units lose half of them in steps after epochs 2-7 of 12; the kill lands after some
  # have gone, so the backup holds a smaller model than the one the stage builds.
  args = ["--workdir=%s" % workdir, "--nodistill", "--train_examples=384", "--student_model=mlp",
          "--student_width=32", "--student_depth=1", "--student_epochs=12",
          "--student_patience=0", "--pruning_structure=channels", "--channel_fraction=0.5",
          "--pruning_begin=0.1", "--pruning_end=0.6", "--progress=epoch",
          "--steps_per_execution=1"]
  killed_after = _kill_after_epoch(args, workdir, 5)
  with open(os.path.join(workdir, "student", "default", "backup", "latest.json")) as f:
    shape = json.load(f)["shape"]
  assert 5 <= killed_after < 12 and shape and min(shape.values()) < 32, shape

  rerun = subprocess.run([sys.executable, "-m", "pipelines.cli.student", *args], cwd=REPO, env=ENV,
                         capture_output=True, text=True, timeout=300)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert "resuming after epoch %d" % killed_after in rerun.stdout
  assert "Epoch 1/12" not in rerun.stdout
  metrics = json.loads(open(os.path.join(workdir, "student", "default", "metrics.json")).read())
  assert metrics["resumed_after_epoch"] == killed_after and metrics["epochs_run"] == 12
  assert all(entry["units_after"] == 16 for entry in metrics["channels"]["layers"].values()), metrics[
      "channels"]["layers"]
  lines = [json.loads(l) for l in open(os.path.join(workdir, "student", "default",
                                                    "metrics.jsonl"))]
  assert [l["epoch"] for l in lines] == list(range(1, 13))
  assert not os.path.exists(os.path.join(workdir, "student", "default", "backup"))


def test_backups_wait_for_the_interval(tmp_path, monkeypatch):
  from models.compat import keras
  from pipelines.config.errors import ConfigError
  from pipelines.runtime import rundir
  from pipelines.train import backup, callbacks
  monkeypatch.setenv("KDPRUNE_BACKUP_SECONDS", "1000")
  model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
  model.compile(optimizer="sgd", loss="mse")
  early = callbacks.PruningAwareEarlyStopping(model, final_step=0, monitor="loss", patience=0,
                                              step_fn=lambda: 0, stage="t")
  saver = backup.StageBackup(str(tmp_path / "b"), "fp", model, model.optimizer,
                             model.trainable_variables, early)
  x = [[0.0, 1.0]] * 8
  model.fit(x, [0.0] * 8, epochs=3, verbose=0, callbacks=[early, saver])
  assert saver.latest() is None  # three quick epochs, none 1000 s after the start
  monkeypatch.setenv("KDPRUNE_BACKUP_SECONDS", "0")
  saver = backup.StageBackup(str(tmp_path / "b"), "fp", model, model.optimizer,
                             model.trainable_variables, early)
  model.fit(x, [0.0] * 8, epochs=2, verbose=0, callbacks=[early, saver])
  assert saver.latest()["epoch"] == 2
  monkeypatch.setenv("KDPRUNE_BACKUP_SECONDS", "soon")
  with pytest.raises(ConfigError, match="KDPRUNE_BACKUP_SECONDS=soon is not a number"):
    rundir.backup_interval_seconds()
