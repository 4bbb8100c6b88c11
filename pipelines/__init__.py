"""kdprune: distil a large TensorFlow teacher into a compact, pruned, int8 student.

Stages live in this package (``pipelines.teacher``, ``pipelines.pipeline``, ...);
model builders live in the top-level ``models`` package. Keras is imported in
one place, :mod:`pipelines.compat`. Flag parsing and config validation
(``pipelines.flags``, ``pipelines.configs``, ``pipelines.sources``) never
import TensorFlow, so a bad invocation fails in about a second.
"""

import os as _os

# tfmot needs Keras 2; this must hold before anything imports TensorFlow
# (pipelines.compat sets it too, next to the one Keras import).
_os.environ["TF_USE_LEGACY_KERAS"] = "1"

__version__ = "0.1.0"
