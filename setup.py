"""kdprune: distil a large TensorFlow teacher into a compact, pruned, int8 student.

Quickstart (from the repository root):

  pip install -e . && kdprune-pipeline --workdir=runs/quickstart
  pip install -e ".[test]" && python -m pytest

Version ranges: the four TensorFlow-family packages are released in lock-step
and break across minor versions (tfmot 0.8 needs tf_keras, i.e. Keras 2, which
tracks TensorFlow's minor version), so each is pinned to the minor version that
was checked together; see BUILD_NOTES.md.
"""

import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _version():
  with open(os.path.join(HERE, "pipelines", "__init__.py")) as f:
    for line in f:
      if line.startswith("__version__"):
        return line.split("=")[1].strip().strip('"')
  raise RuntimeError("no __version__ in pipelines/__init__.py")


TFLM = "tflite-micro==0.dev20261023182759"

STAGES = {
    "kdprune-pipeline": "pipelines.cli.pipeline:entry_point",
    "kdprune-teacher": "pipelines.cli.teacher:entry_point",
    "kdprune-student": "pipelines.cli.student:entry_point",
    "kdprune-qat": "pipelines.cli.qat:entry_point",
    "kdprune-export": "pipelines.cli.export:entry_point",
    "kdprune-sweep": "pipelines.cli.sweep:entry_point",
    "kdprune-search": "pipelines.cli.search:entry_point",
    "kdprune-predict": "pipelines.cli.predict:entry_point",
}

setup(
    name="kdprune",
    version=_version(),
    description="Distil a TensorFlow teacher into a pruned, quantised int8 student.",
    long_description=open(os.path.join(HERE, "README.md")).read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["pipelines", "pipelines.*", "models", "models.*"]),
    package_data={"pipelines.data.datasets": ["digits.npz", "README.md"]},
    include_package_data=True,
    install_requires=[
        # Checked together: TF 2.21 / tf_keras 2.21 / tfmot 0.8.1 / tfds 4.9.10.
        "tensorflow>=2.21,<2.22",
        "tf_keras>=2.21,<2.22",
        "tensorflow-model-optimization>=0.8.1,<0.9",
        "tensorflow-datasets>=4.9.10,<4.10",
        # tfds 4.9.10 imports it but does not declare it.
        "importlib_resources>=6",
        # TF 2.21 no longer installs TensorBoard; summaries need it.
        "tensorboard>=2.21,<2.22",
        # The maintained TFLite interpreter (tf.lite.Interpreter is deprecated; it stays the
        # fallback in pipelines/export/tflite.py).
        "ai-edge-litert>=2.3,<3",
        "absl-py>=1.2",
        "numpy>=1.26",
        # The export report's accuracy_vs_size.png.
        "matplotlib>=3.7",
    ],
    extras_require={
        # pytest-xdist: the suite runs on every core (setup.cfg addopts); import-linter and
        # ruff: the layering contract and lint, checked by tests/test_layout.py; tflite-micro:
        # the tflm target's tests.
        "test": ["pytest>=8", "pytest-xdist>=3.5", "import-linter>=2.1", "ruff>=0.6", TFLM],
        # --target=tflm runs the file in TFLite Micro's own interpreter (published as nightly
        # builds only: the one checked with this version is pinned).
        "tflm": [TFLM],
        # The documentation site (mkdocs.yml): `mkdocs build --strict`, checked by .ci/run.
        "docs": ["mkdocs==1.6.1", "pymdown-extensions==13.1.2"],
    },
    entry_points={"console_scripts": ["%s=%s" % kv for kv in STAGES.items()]},
)
