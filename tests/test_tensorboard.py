"""TensorBoard: read the event files back with TensorBoard's own loader."""

import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.hparams import plugin_data_pb2

from pipelines.runtime import execute as stage
from pipelines.stages import teacher
from tests.conftest import tiny_teacher_config


@pytest.fixture(scope="module")
def teacher_tb(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("tb")
  config = tiny_teacher_config(epochs=2)
  stage.execute("teacher", teacher.run, config, str(workdir), teacher.fingerprint_inputs(config),
                log=lambda *_: None)
  return workdir / "teacher" / "tb"


def _load(path):
  acc = event_accumulator.EventAccumulator(str(path), size_guidance={"tensors": 0, "scalars": 0})
  acc.Reload()
  return acc


def _scalar_tags(acc):
  tags = acc.Tags()
  return set(tags.get("scalars", [])) | set(tags.get("tensors", []))


def test_train_and_validation_scalars_learning_rate_and_graph(teacher_tb):
  train = _load(teacher_tb / "train")
  assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"} <= _scalar_tags(train)
  assert len(train.Tensors("epoch_loss")) == 2  # one point per epoch
  assert train.Tags()["graph"] is True
  validation = _load(teacher_tb / "validation")
  assert {"epoch_loss", "epoch_accuracy"} <= _scalar_tags(validation)


def test_hparams_session_and_final_metrics(teacher_tb):
  root = _load(teacher_tb)
  assert {"final/test_accuracy", "final/test_loss", "final/val_accuracy"} <= _scalar_tags(root)
  content = root.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
  assert hparams_metadata.SESSION_START_INFO_TAG in content
  data = plugin_data_pb2.HParamsPluginData.FromString(
      content[hparams_metadata.SESSION_START_INFO_TAG])
  hparams = data.session_start_info.hparams
  assert hparams["model.name"].string_value == "mlp"
  assert hparams["train.epochs"].number_value == 2
  assert hparams["data.dataset"].string_value == "digits"
