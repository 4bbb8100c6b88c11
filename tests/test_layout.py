"""The layering holds: import-linter's contracts (setup.cfg) pass, and break on a back-arrow;
ruff is clean."""

import os
import shutil
import subprocess
import sys

from tests.conftest import REPO

_BIN = os.path.dirname(sys.executable)


def _lint_imports(cwd):
  env = dict(os.environ, PYTHONPATH=cwd)
  return subprocess.run([os.path.join(_BIN, "lint-imports"), "--config", "setup.cfg",
                         "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True,
                        timeout=300)


def test_import_contracts_are_kept():
  done = _lint_imports(REPO)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
  assert "6 kept, 0 broken" in done.stdout


def _copy_with_line(tmp_path, module: str, line: str):
  for name in ("pipelines", "models"):
    shutil.copytree(os.path.join(REPO, name), tmp_path / name,
                    ignore=shutil.ignore_patterns("__pycache__", "*.npz"))
  shutil.copy(os.path.join(REPO, "setup.cfg"), tmp_path / "setup.cfg")
  path = tmp_path.joinpath(*module.split(".")).with_suffix(".py")
  path.write_text(path.read_text() + "\n%s  # noqa\n" % line)
  return _lint_imports(str(tmp_path))


def test_a_back_arrow_breaks_the_layers_contract(tmp_path):
  done = _copy_with_line(tmp_path, "pipelines.config.base", "from pipelines.stages import student")
  assert done.returncode != 0
  assert "BROKEN" in done.stdout
  assert "pipelines.config.base -> pipelines.stages.student" in done.stdout, done.stdout[-3000:]


def test_tfmot_outside_prune_and_quantize_breaks_the_backend_seam(tmp_path):
  done = _copy_with_line(tmp_path, "pipelines.train.distill",
                         "import tensorflow_model_optimization")
  assert done.returncode != 0
  assert "import tfmot BROKEN" in done.stdout, done.stdout[-3000:]


def test_a_stage_calling_tfmot_code_past_the_backend_seam_breaks_its_contract(tmp_path):
  done = _copy_with_line(tmp_path, "pipelines.stages.student.train",
                         "from pipelines.prune import magnitude")
  assert done.returncode != 0
  assert "backend seam BROKEN" in done.stdout, done.stdout[-3000:]


def test_ruff_is_clean():
  done = subprocess.run([os.path.join(_BIN, "ruff"), "check", "."], cwd=REPO, capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 0, done.stdout[-3000:]
