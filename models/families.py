"""Where model families register their builders (``@register("cnn")``).

Kept apart from :mod:`models.registry` so that the family modules, which
register themselves on import, and the registry, which imports them, form no
import cycle.
"""

from typing import Callable, Dict

from models import spec as spec_lib

BUILDERS: Dict[str, Callable] = {}


def register(name: str, description: str = "", width: int = 1, depth: int = 1,
             dropout: float = 0.0):
  """Decorator registering a family builder under ``name``.

  Built-in families take their description and defaults from
  :data:`models.spec.BUILTIN_FAMILIES`; others give them here.
  """
  def wrap(fn):
    if name in BUILDERS:
      raise ValueError("model family %r is already registered" % name)
    if name not in spec_lib.BUILTIN_FAMILIES:
      spec_lib._EXTRA_FAMILIES[name] = (description, width, depth, dropout)  # pylint: disable=protected-access
    BUILDERS[name] = fn
    return fn
  return wrap
