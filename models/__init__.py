"""Teacher and student builders (Functional Keras 2 models only).

Pick a family by name (``mlp``, ``cnn``, ``lenet``, ``resnet``, the Keras Applications) or pass
your own builder as ``package.module:function``; see :mod:`models.registry`.
"""

from models.spec import ModelSpec, validate_spec  # noqa: F401


def __getattr__(name):
  # build_model & co. need TensorFlow; import them on first use so that
  # `from models import ModelSpec` stays light.
  if name in ("available", "build_model", "check_model", "register"):
    from models import registry  # pylint: disable=g-import-not-at-top
    return getattr(registry, name)
  raise AttributeError(name)
