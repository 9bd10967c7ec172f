"""The cine / DICOM mode of the Gradio page: open a loop, scrub its frames, click, propagate (with progress),
correct, play the overlay, download the masks and the per-frame measurement CSV.

Every handler calls :class:`~usam.apps.demo.cine.CineBackend` and shows its :class:`~usam.apps.demo.cine.CineView`.
"""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from .cine import TABLE_COLUMNS, CineBackend, CineSession, CineView
from .session import MODES, NONE_CHOICE
from .ui import QUIET, warn


def cine_outputs(view: CineView) -> tuple:
    """The values of :func:`_outputs`' components for ``view``."""
    if view.error and view.status:
        warn(view.status.split("\n\n")[0].replace("**", ""))
    n, files = view.frames, view.files
    slider = gr.Slider(minimum=0, maximum=max(n - 1, 1), value=view.session.frame, step=1, interactive=n > 1)
    return (view.session, view.image, slider, view.status, view.table or None,
            files and files.video, files and files.masks_zip, files and files.csv)


def _panels(c: SimpleNamespace, adapter_choices: list[str]) -> None:
    with gr.Row():
        with gr.Column(scale=3):
            c.upload = gr.File(label="Open a loop: a video (MP4, AVI, MOV, MKV) or a DICOM (multi-frame)",
                               type="filepath", elem_id="usam-cine-upload", height=110)
            c.image = gr.Image(label="Frame — click to prompt", type="numpy", format="png", interactive=False,
                               elem_id="usam-cine-frame", buttons=["fullscreen"], height=480)
            c.slider = gr.Slider(minimum=0, maximum=1, value=0, step=1, label="Frame", interactive=False,
                                 elem_id="usam-cine-slider")
            with gr.Row():
                c.mode = gr.Radio(list(MODES), value=MODES[0], label="Click mode", elem_id="usam-cine-mode", scale=3)
                c.clear = gr.Button("Clear this frame's prompt", elem_id="usam-cine-clear", scale=1)
                c.propagate = gr.Button("Propagate", variant="primary", elem_id="usam-cine-propagate", scale=1)
            c.status = gr.Markdown("Open a video or a DICOM file.", elem_id="usam-cine-status")
        with gr.Column(scale=2):
            c.adapter = gr.Dropdown(adapter_choices, value=NONE_CHOICE, elem_id="usam-cine-adapter",
                                    label="Prompts answered by (the bare backbone turns a click into a box)")
            c.video = gr.Video(label="Overlay video", interactive=False, elem_id="usam-cine-video")
            c.masks = gr.File(label="Masks (zip of NNNN.png, 0 / 255)", interactive=False, elem_id="usam-cine-masks")
            c.csv = gr.File(label="Per-frame measurements (CSV; mm when the file records its pixel spacing)",
                            interactive=False, elem_id="usam-cine-csv")
    c.table = gr.Dataframe(headers=list(TABLE_COLUMNS), label="Per frame: confidence, lost flag, measurements",
                           interactive=False, elem_id="usam-cine-table")


def _outputs(c: SimpleNamespace) -> list:
    return [c.state, c.image, c.slider, c.status, c.table, c.video, c.masks, c.csv]


def _wire(c: SimpleNamespace, cine: CineBackend) -> None:
    outs = _outputs(c)

    def on_click(session, evt: gr.SelectData):
        x, y = evt.index
        return cine_outputs(cine.click(session, x, y))

    # ``from __future__ import annotations`` turns hints into strings: give Gradio the real class
    on_click.__annotations__["evt"] = gr.SelectData

    def on_propagate(session, progress=gr.Progress(track_tqdm=True)):  # the tracker's tqdm bar, in the page
        return cine_outputs(cine.propagate(session))

    c.upload.change(lambda f, s: cine_outputs(cine.open(f, s)), [c.upload, c.state], outs, **QUIET)
    c.slider.input(lambda s, k: cine_outputs(cine.show(s, k)), [c.state, c.slider], outs,
                   **{**QUIET, "show_progress": "hidden", "trigger_mode": "always_last"})
    c.image.select(on_click, [c.state], outs, **QUIET)
    c.mode.change(lambda s, m: setattr(s, "mode", m) or s, [c.state, c.mode], [c.state], **QUIET)
    c.clear.click(lambda s: cine_outputs(cine.clear_frame(s)), [c.state], outs, **QUIET)
    c.adapter.change(lambda s, a: cine_outputs(cine.set_adapter(s, a)), [c.state, c.adapter], outs, **QUIET)
    c.propagate.click(on_propagate, [c.state], outs, api_visibility="private")


def cine_tab(cine: CineBackend, adapter_choices: list[str]) -> None:
    """The cine / DICOM mode's components and events (inside a ``gr.Tab``)."""
    c = SimpleNamespace(state=gr.State(CineSession()))
    _panels(c, adapter_choices)
    _wire(c, cine)
