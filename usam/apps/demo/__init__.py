"""The Gradio click demo (an app on the library, not part of it): upload an ultrasound image, click / draw a box,
see the mask, the organ adapter's heads and measurements; or open a loop (video / DICOM), click on a frame and
follow the object through every frame.

>>> import usam
>>> from usam.apps.demo import launch
>>> launch(usam.load(adapters=["adapters/fetal_head"]), host="127.0.0.1", port=7860)   # blocks

- :mod:`.session`: one tab's state (:class:`Session`) and what a handler returns (:class:`View`);
- :mod:`.backend`: :class:`DemoBackend`, every event's logic without Gradio (and the ``/segment`` API);
- :mod:`.draw`, :mod:`.auto`: overlays (the one palette) and measurements (:mod:`usam.measure`);
- :mod:`.upload`, :mod:`.api`: checked uploads and bundled examples; the ``/segment`` request;
- :mod:`.cine`: :class:`CineBackend`, the cine / DICOM mode without Gradio (:class:`usam.Tracker`);
- :mod:`.app`: the Gradio page (:func:`build_app`) and :func:`launch`; :mod:`.ui` its image tab, :mod:`.cine_ui`
  its cine tab, :mod:`.page` its CSS and page scripts.

``usam demo`` (:mod:`usam.apps.cli.demo`) holds the command-line options and imports this package (and gradio)
only when the demo starts.
"""

from __future__ import annotations

from .app import build_app, launch
from .backend import DemoBackend
from .cine import CineBackend, CineSession
from .session import Session, View

__all__ = ["CineBackend", "CineSession", "DemoBackend", "Session", "View", "build_app", "launch"]
