"""One process with two logical CPU devices under ``MirroredStrategy``, for
tests/test_distribute.py: the pipeline of ``_bn_pipeline`` in WORKDIR (its finished teacher and
student are skipped; QAT and export run on both replicas); with ``keras3``, for
tests/test_keras3.py, the pipeline of its ``keras3_pipeline`` (a Keras 3 student).

  python -m tests.mirrored_stages WORKDIR [keras3]

Logical devices must be set up before TensorFlow initialises its devices, hence a process of its
own. Prints the number of replicas and which stages ran.
"""

import sys

from models.compat import tf
from pipelines.runtime import distribute


def main(workdir: str, which: str = "bn") -> None:
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  strategy = distribute.init("mirrored")  # MirroredStrategy over every local (logical) device
  print("replicas: %d" % strategy.num_replicas_in_sync)
  from pipelines.stages import pipeline  # pylint: disable=g-import-not-at-top
  if which == "keras3":
    from tests.test_keras3 import keras3_pipeline as config  # pylint: disable=g-import-not-at-top
  else:
    from tests.test_distribute import _bn_pipeline as config  # pylint: disable=g-import-not-at-top
  outcomes = pipeline.run(config(), workdir, log=lambda *_: None)
  print("ran: " + " ".join("%s=%s" % (o.name, o.ran) for o in outcomes))


if __name__ == "__main__":
  main(*sys.argv[1:3])
