"""The demo's Gradio app: the page (an image tab and a cine / DICOM tab) and :func:`launch`.

Everything runs offline: no share links, analytics off, no web fonts.
"""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported

from typing import Sequence

import gradio as gr

from ...backbones import DEFAULT_BACKBONE
from ...model import UsamModel
from .backend import DemoBackend
from .cine import CineBackend
from .cine_ui import cine_tab
from .page import A11Y_JS, CSS
from .ui import image_tab, theme
from .upload import DEMO_MAX_BYTES

TITLE = "usam — ultrasound Segment Anything"


def _header(backend: DemoBackend, title: str) -> None:
    """The page's title and how to use it."""
    bare_hint = (
        "Without an adapter (\"none (bare backbone)\") draw a **box**: the bare LiteMedSAM backbone was trained on "
        "boxes only, so a lone point is refused; points added after a box refine it."
        if backend.bare_needs_box else ""
    )
    gr.Markdown(
        f"## {title}\n"
        "Upload an ultrasound image or pick an example, choose a click mode and click the image: "
        "**positive** / **negative** points, or a **box** (two opposite corners); keyboard: type X / Y below "
        "the image and press a button. Point clicks need an **organ adapter** (default: the first one "
        f"loaded). {bare_hint} The **Cine / DICOM** tab follows a clicked object through a video or a multi-frame "
        "DICOM."
    )


def build_app(model, examples=None, title: str = TITLE, workdir=None) -> gr.Blocks:
    """The Gradio Blocks of the demo (not launched). ``examples``: paths, a folder, ``[]`` or ``None`` (bundled).

    The backends are ``app.usam_backend`` (image mode) and ``app.usam_cine`` (cine mode), for tests and embedding.
    """
    backend = DemoBackend(model, examples=examples, workdir=workdir)
    cine = CineBackend(model, workdir=backend.workdir, lock=backend.lock)  # one model: one lock
    with gr.Blocks(title=title, analytics_enabled=False) as app:
        app.usam_backend, app.usam_cine = backend, cine
        _header(backend, title)
        with gr.Tabs(elem_id="usam-tabs"):
            with gr.Tab("Image", id="image", elem_id="usam-tab-image"):
                image_tab(backend, app)
            with gr.Tab("Cine / DICOM", id="cine", elem_id="usam-tab-cine"):
                cine_tab(cine, backend.adapter_choices)
    return app


def launch(
    model=None,
    *,
    adapters: Sequence[str] = (),
    backbone: str | None = None,
    checkpoint: str | None = None,
    device: str | None = None,
    precision: str = "auto",
    host: str = "127.0.0.1",
    port: int | None = 7860,
    examples=None,
    prevent_thread_lock: bool = False,
    quiet: bool = False,
    **launch_kwargs,
) -> gr.Blocks:
    """Build (if ``model`` is None) the model, then serve the demo offline; returns the launched ``gr.Blocks``.

    Args:
      model: a :class:`~usam.model.UsamModel`, or ``None`` to build one from ``backbone`` / ``checkpoint`` /
        ``adapters`` / ``device`` / ``precision`` (defaults: bundled LiteMedSAM, no adapter).
      host, port: where to listen (``port=None``: the first free port from 7860).
      examples: image paths or a folder (default: the bundled ``demo/examples``).
      prevent_thread_lock: return at once (server in a background thread; ``app.local_url``, ``app.close()``).
      launch_kwargs: passed to ``gr.Blocks.launch`` (``share`` is always off).
    """
    if model is None:
        model = UsamModel.from_pretrained(backbone=backbone or DEFAULT_BACKBONE, checkpoint=checkpoint,
                                          adapters=list(adapters), device=device, precision=precision)
    else:
        for ref in adapters:
            model.load_adapter(ref)
    app = build_app(model, examples=examples)
    app.queue(default_concurrency_limit=4)
    launch_kwargs.pop("share", None)
    ex_dirs = sorted({str(p.parent.resolve()) for p in app.usam_backend.examples})
    allowed = list(launch_kwargs.pop("allowed_paths", None) or []) + ex_dirs + [str(app.usam_backend.workdir)]
    for key, value in (("max_file_size", DEMO_MAX_BYTES), ("ssr_mode", False), ("mcp_server", False),
                       ("theme", theme()), ("css", CSS), ("js", A11Y_JS)):
        launch_kwargs.setdefault(key, value)
    app.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=prevent_thread_lock,
               quiet=quiet, allowed_paths=allowed, **launch_kwargs)
    return app
