"""Shared fixtures. Tests never touch the network or the user's ~/tensorflow_datasets."""

import atexit
import os
import shutil
import tempfile

# Before TensorFlow / TFDS are imported anywhere: a private TFDS data directory
# (the embedded ``digits`` dataset is prepared there once per session).
_TFDS_DIR = tempfile.mkdtemp(prefix="kdprune-tests-tfds-")
atexit.register(shutil.rmtree, _TFDS_DIR, ignore_errors=True)
os.environ["TFDS_DATA_DIR"] = _TFDS_DIR
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from models.registry import ModelSpec  # noqa: E402
from pipelines import config as configs  # noqa: E402
from pipelines.data import bundle as data  # noqa: E402
from pipelines.stages import (
  export,  # noqa: E402
  qat,  # noqa: E402
  student,  # noqa: E402
  teacher,  # noqa: E402
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_TFDS = os.path.join(os.path.dirname(REPO), "shared", "data", "tfds")


def tiny_teacher_config(**train_overrides) -> teacher.TeacherConfig:
  """A teacher that trains on the embedded digits in about two seconds."""
  train = dict(epochs=3, batch_size=64, learning_rate=3e-3, patience=0)
  train.update(train_overrides)
  return teacher.TeacherConfig(
      data=data.DataConfig(dataset="digits"),
      model=ModelSpec("mlp", width=32, depth=1),
      train=configs.TrainConfig(**train),
      progress="none")


def tiny_student_config(name="default", epochs=4, distill=True, teacher_outputs="auto",
                        **pruning) -> student.StudentConfig:
  """A student that prunes a small MLP on digits in a few seconds."""
  prune = dict(final_sparsity=0.8, begin="0.0", end="0.5", frequency=5)
  prune.update(pruning)
  return student.StudentConfig(
      data=data.DataConfig(dataset="digits"),
      model=ModelSpec("mlp", width=64, depth=1),
      train=configs.TrainConfig(epochs=epochs, batch_size=64, learning_rate=3e-3, patience=0),
      distill=configs.DistillConfig(enabled=distill, teacher_outputs=teacher_outputs),
      pruning=configs.PruningConfig(**prune),
      name=name,
      progress="none")


def tiny_qat_config(name="default", epochs=1, scheme="prune_preserve", distill=True,
                    **train) -> qat.QatConfig:
  """QAT fine-tuning of a tiny student for one short epoch."""
  options = dict(epochs=epochs, batch_size=64, learning_rate=1e-3, patience=0)
  options.update(train)
  return qat.QatConfig(
      data=data.DataConfig(dataset="digits"), train=configs.TrainConfig(**options),
      distill=configs.DistillConfig(enabled=distill), scheme=scheme, name=name, progress="none")


def tiny_export_config(name="default", baselines=export.ExportConfig.baselines
                       ) -> export.ExportConfig:
  """Export with few latency runs and a small calibration set (``baselines``: the default, the
  float teacher only; ``configs.BASELINES`` for every reference file)."""
  return export.ExportConfig(data=data.DataConfig(dataset="digits"), name=name, latency_runs=5,
                             latency_warmup=1, representative_examples=32, baselines=baselines)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
  """One tiny run of every stage (teacher -> student -> qat -> export), shared by the tests that
  read its artifacts: the suite's end-to-end test."""
  from pipelines.stages import pipeline  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp("run")
  config = pipeline.PipelineConfig(
      teacher=tiny_teacher_config(epochs=3), student=tiny_student_config(epochs=4),
      qat=tiny_qat_config(), export=tiny_export_config(baselines=configs.BASELINES))
  outcomes = pipeline.run(config, str(workdir), log=lambda *_: None)
  return workdir, config, outcomes


SYNTHETIC = "synthetic_regression:n_samples=400,n_features=12,n_informative=6,noise=1"


@pytest.fixture(scope="session")
def regression_run(tmp_path_factory):
  """One tiny regression run of every stage on synthetic data (tests/test_regression.py,
  tests/test_predict.py)."""
  from pipelines.stages import pipeline  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp("regression")
  d = data.DataConfig(dataset=SYNTHETIC, task="regression")
  fast = dict(batch_size=32, learning_rate=3e-3, patience=0)
  config = pipeline.PipelineConfig(
      teacher=teacher.TeacherConfig(data=d, model=ModelSpec("mlp", width=64, depth=2),
                                    train=configs.TrainConfig(epochs=8, **fast), progress="none"),
      student=student.StudentConfig(
          data=d, model=ModelSpec("mlp", width=48, depth=2),
          train=configs.TrainConfig(epochs=6, **fast), distill=configs.DistillConfig(alpha=0.5),
          pruning=configs.PruningConfig(final_sparsity=0.75, begin="0.0", end="0.5"),
          progress="none"),
      qat=qat.QatConfig(data=d, train=configs.TrainConfig(epochs=1, batch_size=32,
                                                           learning_rate=1e-4, patience=0),
                        progress="none"),
      export=export.ExportConfig(data=d, latency_runs=3, latency_warmup=1,
                                 representative_examples=16, baselines=configs.BASELINES))
  outcomes = pipeline.run(config, str(workdir), log=lambda *_: None)
  return workdir, outcomes, config


@pytest.fixture
def caplog(caplog):  # pylint: disable=redefined-outer-name
  """pytest's ``caplog``, fed by the ``kdprune`` logger too: that logger does not propagate to
  the root logger, where pytest's handler listens (pipelines/runtime/progress.py)."""
  from pipelines.runtime import progress  # pylint: disable=g-import-not-at-top
  progress.LOGGER.addHandler(caplog.handler)
  try:
    yield caplog
  finally:
    progress.LOGGER.removeHandler(caplog.handler)


@pytest.fixture
def tiny_config():
  return tiny_teacher_config()


def write_npz(path, n_train=60, n_test=20, shape=(4, 4, 1), classes=3, with_val=False, **overrides):
  rng = np.random.default_rng(0)
  arrays = {
      "x_train": rng.random((n_train,) + shape).astype(np.float32),
      "y_train": rng.integers(0, classes, n_train),
      "x_test": rng.random((n_test,) + shape).astype(np.float32),
      "y_test": rng.integers(0, classes, n_test),
  }
  if with_val:
    arrays["x_val"] = rng.random((10,) + shape).astype(np.float32)
    arrays["y_val"] = rng.integers(0, classes, 10)
  arrays.update(overrides)
  arrays = {k: v for k, v in arrays.items() if v is not None}
  np.savez(path, **arrays)
  return str(path)
