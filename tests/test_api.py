"""The Python API: the README's notebook example runs as written; run_stage; the kdprune logger."""

import io
import logging
import os
import re
import subprocess
import sys

import pytest

from pipelines.runtime import progress
from tests.conftest import REPO


def _readme_example() -> str:
  with open(os.path.join(REPO, "README.md")) as f:
    text = f.read()
  match = re.search(r"<!-- notebook-example -->\n```python\n(.*?)```", text, re.S)
  assert match, "README.md lost its notebook example"
  return match.group(1)


def test_readme_notebook_example_distils_a_users_teacher(tmp_path):
  script = tmp_path / "notebook.py"
  script.write_text(_readme_example())
  env = dict(os.environ, TFDS_DATA_DIR=str(tmp_path / "tfds"), PYTHONPATH=REPO)
  done = subprocess.run([sys.executable, str(script)], cwd=str(tmp_path), env=env,
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  line = [l for l in done.stdout.splitlines() if l.startswith("int8 student:")]
  assert line, done.stdout[-3000:]
  acc, teacher_acc, sparsity, gz = re.search(
      r"test accuracy ([\d.]+) \(teacher ([\d.]+)\), sparsity ([\d.]+), (\d+) bytes", line[0]).groups()
  assert float(teacher_acc) > 0.9
  assert float(acc) > 0.85  # measured on the int8 file with the TFLite interpreter
  assert float(sparsity) > 0.6  # the file's zeros (0.75 of the pruned layers)
  assert int(gz) > 0
  assert "[teacher] imported" in done.stdout  # the user's teacher, not a trained one


def test_run_stage_refuses_what_is_not_a_stage_config(tmp_path):
  import pipelines  # pylint: disable=g-import-not-at-top
  with pytest.raises(TypeError, match="run_stage takes"):
    pipelines.run_stage(pipelines.DataConfig(), str(tmp_path))


def test_distill_refuses_a_keras3_teacher_in_one_line(tmp_path):
  import pipelines  # pylint: disable=g-import-not-at-top
  with pytest.raises(pipelines.ConfigError, match="must be a tf_keras model"):
    pipelines.distill(object(), None, None, workdir=str(tmp_path))


def test_progress_lines_follow_the_verbosity(monkeypatch):
  out = io.StringIO()
  monkeypatch.setattr(sys, "stdout", out)
  old = progress.LOGGER.level
  try:
    progress.set_verbosity(0)
    progress.say("[student/default] running")
    progress.set_verbosity(-1)
    progress.say("[student/default] hidden")
    progress.warn("[student/default] warning: shown")
  finally:
    progress.LOGGER.setLevel(old)
  assert out.getvalue().splitlines() == ["[student/default] running",
                                         "[student/default] warning: shown"]
  assert logging.getLogger("kdprune") is progress.LOGGER
