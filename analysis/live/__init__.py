"""Live SXDM maps: centre-of-mass maps computed while a map is measured.

``callback.LiveSXDM`` is the bluesky callback; ``dispatch`` runs it on a
worker thread; ``frames`` reads frames from the detector files as they are
written; ``maps`` turns accumulated moments into maps; ``plot`` draws them.
"""

from .callback import LiveSXDM

__all__ = ["LiveSXDM"]
