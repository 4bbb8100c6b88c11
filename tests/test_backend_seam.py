"""The backend seam: the student and QAT stages reach the pruning and quantization library only
through pipelines.prune.backend and pipelines.quantize.backend, so a second backend can replace
tfmot's without touching them."""

import dataclasses

import pytest

from pipelines.config.errors import ConfigError
from pipelines.prune import backend as prune_backend
from pipelines.quantize import backend as quantize_backend
from pipelines.runtime import execute
from pipelines.stages import qat, student
from tests import builders
from tests.conftest import tiny_qat_config, tiny_student_config


def _spy(backend, calls):
  """``backend`` with every operation recorded in ``calls`` before it runs."""
  def recorded(name, fn):
    def call(*args, **kwargs):
      calls.append(name)
      return fn(*args, **kwargs)
    return call
  return dataclasses.replace(backend, name="spy", **{
      f.name: recorded(f.name, getattr(backend, f.name))
      for f in dataclasses.fields(backend) if f.name != "name"})


@pytest.mark.slow
def test_the_stages_prune_and_quantize_through_whichever_backend_the_seam_gives(
    tmp_path, monkeypatch):
  calls = []
  monkeypatch.setattr(prune_backend, "for_model",
                      lambda model: _spy(prune_backend.TFMOT, calls))
  monkeypatch.setattr(quantize_backend, "for_model",
                      lambda model: _spy(quantize_backend.TFMOT, calls))
  workdir = str(tmp_path)
  s_config = tiny_student_config(epochs=2, distill=False)
  execute.run_stage(student.STAGE, s_config, workdir, log=lambda *_: None)
  assert {"wrap", "callbacks", "step", "strip", "sparsity_report", "check_sparsity"} <= set(calls)
  calls.clear()
  q_config = tiny_qat_config(distill=False)
  execute.run_stage(qat.STAGE, q_config, workdir, log=lambda *_: None)
  assert {"zero_masks", "quantize", "drift_report", "remask", "float_view",
          "sparsity_report", "check_sparsity"} <= set(calls)


def test_a_keras3_model_is_pruned_by_the_keras3_backend_and_refused_by_tfmots_quantizer():
  model = builders.keras3((8, 8, 1), 10)
  assert prune_backend.for_model(model).name == "keras3"  # pipelines/prune/keras3.py
  with pytest.raises(ConfigError, match="Keras 3 model") as e:
    quantize_backend.for_model(model)  # the QAT stage quantizes it after training instead
  assert "\n" not in str(e.value)
