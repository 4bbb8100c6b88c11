"""The Keras import point and TensorFlow's start-up noise filter."""

import os

import pytest

from models import compat


def test_keras_is_tf_keras_and_legacy_keras_is_set():
  assert compat.keras.__name__.startswith("tf_keras")
  assert os.environ["TF_USE_LEGACY_KERAS"] == "1"


def test_known_start_up_lines_are_noise_and_real_errors_are_not(monkeypatch):
  noise = [
      "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
      "I0000 00:00:1795279872.289532    8061 port.cc:153] oneDNN custom operations are on. You",
      "I0000 00:00:1795279872.289995    8061 cudart_stub.cc:31] Could not find cuda drivers on "
      "your machine, GPU will not be used.",
  ]
  for line in noise:
    assert compat.is_startup_noise(line), line
  real = [
      "W0000 00:00:1 dso_loader.cc:64] Could not load dynamic library 'libcudnn.so.9'",
      "Traceback (most recent call last):",
      "kdprune-teacher: error: --teacher_epochs=abc",
  ]
  for line in real:
    assert not compat.is_startup_noise(line), line
  cuinit = ("E0000 00:00:1795280992.245990   24287 cuda_platform.cc:52] failed call to cuInit: "
            "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)")
  monkeypatch.setattr(compat, "_has_nvidia_device", lambda: False)
  assert compat.is_startup_noise(cuinit)  # no GPU in the machine: expected
  monkeypatch.setattr(compat, "_has_nvidia_device", lambda: True)
  assert not compat.is_startup_noise(cuinit)  # a GPU node whose driver fails: shown


@pytest.mark.slow
def test_tfmot_loads_without_importing_keras_3_and_keras_3_still_loads():
  """tfmot's ``from keras.engine import base_layer`` imported all of Keras 3 in every process
  (0.6 s) to fail; it is answered at once now, and ``import keras`` works as before."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  code = ("import sys, models.compat, tensorflow_model_optimization\n"
          "print('keras' in sys.modules, 'matplotlib' in sys.modules)\n"
          "import keras\n"
          "print(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]).count_params())\n")
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  done = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True,
                        timeout=300, env=dict(os.environ, PYTHONPATH=repo))
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.split() == ["False", "False", "15"], done.stdout
