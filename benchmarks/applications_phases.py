"""Where the time of the Keras Applications end-to-end test goes, stage by stage and by phase.

  python -m benchmarks.applications_phases --workdir=/tmp/kdprune-apps-phases [--family=mobilenet_v2]

Runs every stage (teacher -> student -> QAT -> export) with the configuration of
``tests/test_applications.py::test_application_students_go_through_pruning_qat_and_int8_export``
(digits, 256 training examples, width 0.35, two student epochs, one QAT epoch) in this process,
then prints the wall time and each stage's phases (from its manifest entry). The workdir is emptied
first, so every stage runs.
"""

import json
import os
import shutil
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Run directory (emptied first).")
flags.DEFINE_string("family", "mobilenet_v2", "The Applications family of the student.")
flags.mark_flag_as_required("workdir")


def main(argv):
  del argv
  # Importing the test module imports tests/conftest.py, which points TFDS at a private
  # temporary directory (the embedded dataset is prepared there), as in the suite.
  # pylint: disable=g-import-not-at-top
  from pipelines.stages import pipeline
  from tests.test_applications import _run_config
  # pylint: enable=g-import-not-at-top
  shutil.rmtree(FLAGS.workdir, ignore_errors=True)
  start = time.time()
  outcomes = pipeline.run(_run_config(FLAGS.family, FLAGS.family), FLAGS.workdir,
                          log=lambda *_: None)
  print("total %.1f s" % (time.time() - start))
  for outcome in outcomes:
    print(outcome.name, json.dumps(outcome.entry.get("phases")))


if __name__ == "__main__":
  app.run(main)
