"""The image mode of the Gradio page: one function per panel and per group of events (:func:`image_tab`), and
what every tab shares (the theme, warnings).

Every handler calls :class:`~usam.apps.demo.backend.DemoBackend` and shows its :class:`View`; nothing here
touches the model.
"""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported

from types import SimpleNamespace

import gradio as gr

from ...errors import UsamError
from .backend import DemoBackend, log, readable
from .page import CLICKS_JS
from .session import MEASURE_KINDS, MODES, NONE_CHOICE, Session, View
from .upload import EXAMPLE_INFO, EXAMPLES_CREDIT

#: Options of the events that only redraw (a small progress mark, not in the API).
QUIET = {"api_visibility": "private", "show_progress": "minimal"}


def theme():
    """The page's theme: system fonts only."""
    sans = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Helvetica", "Arial", "sans-serif"]
    mono = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]
    return gr.themes.Default(font=sans, font_mono=mono)  # no Google fonts: the demo runs offline


def pixel_size_text(value: float | None) -> str:
    """The pixel-size box's text: empty for none (never "0")."""
    return "" if value is None else repr(float(value))


def warn(text: str) -> None:
    try:
        gr.Warning(text)
    except Exception:  # outside an event (no request to warn): the status says it anyway
        pass


def outputs_of(view: View, *extra) -> tuple:
    """The values of the page's outputs (:func:`_outputs` order) for ``view``, then ``extra``."""
    if view.error and view.status:
        warn(view.status.split("\n\n")[0].replace("**", ""))
    cands = view.candidates
    captions = [c for _, c in cands]
    return (
        view.session, view.overlay,
        gr.Gallery(value=cands or None, selected_index=view.selected),
        gr.Radio(choices=captions, value=captions[view.selected] if captions else None),
        view.mask_file, view.status, view.auto_overlay, view.probabilities, view.auto_summary, view.measurements,
        view.prompts, *extra,
    )


def recorded(result) -> tuple:
    """Outputs of a recorded click ``(overlay, status, error)``: the overlay with it drawn and the "working" status."""
    overlay_value, text, error = result
    if error:
        warn(text.replace("**", ""))
    return overlay_value, text


# ---------------------------------------------------------------------------------------------- panels
def _image_panel(ui: SimpleNamespace, first: Session) -> None:
    """The upload, the clickable image, click mode, undo / clear and the keyboard path."""
    # first in the page's order: on a narrow screen the columns stack and the upload stays on top
    ui.upload = gr.File(label="Upload an image (PNG, JPEG, BMP, TIFF; 8 or 16 bit) — × clears it",
                        type="filepath", file_types=["image", ".tif", ".tiff"], elem_id="usam-upload", height=130)
    ui.overlay = gr.Image(label="Image — click to prompt", type="numpy", format="png", interactive=False,
                          elem_id="usam-overlay", buttons=["fullscreen"], height=520)
    with gr.Row():
        ui.mode = gr.Radio(list(MODES), value=first.mode, label="Click mode", elem_id="usam-mode", scale=3)
        ui.undo = gr.Button("Undo", elem_id="usam-undo", scale=1)
        ui.clear = gr.Button("Clear prompts", elem_id="usam-clear", scale=1)
    with gr.Row(elem_id="usam-keyboard"):
        ui.key_x = gr.Number(label="X (pixel, 0 = left)", value=None, precision=0, placeholder="x",
                             elem_id="usam-x", min_width=90)
        ui.key_y = gr.Number(label="Y (pixel, 0 = top)", value=None, precision=0, placeholder="y",
                             elem_id="usam-y", min_width=90)
        ui.key_pos = gr.Button("Add positive point at X, Y", elem_id="usam-add-pos", min_width=120)
        ui.key_neg = gr.Button("Add negative point at X, Y", elem_id="usam-add-neg", min_width=120)
        ui.key_box = gr.Button("Add box corner at X, Y", elem_id="usam-add-corner", min_width=120)
    ui.status = gr.Markdown("Upload an image or pick an example.", elem_id="usam-status")
    # hidden: the page script (CLICKS_JS) writes the image clicks here
    ui.clicks = gr.Textbox(value="", elem_id="usam-clicks", lines=1, max_lines=1, container=False,
                           show_label=False, label="clicks")


def _result_panel(ui: SimpleNamespace) -> None:
    """The prompts as JSON, the multimask candidates and the mask download."""
    ui.prompts = gr.Textbox(label="Prompts of the mask shown (JSON; /segment takes the same keys)", value="",
                            interactive=False, lines=1, max_lines=4, elem_id="usam-prompts")
    ui.choice = gr.Radio([], type="index", elem_id="usam-choice",
                         label="Chosen candidate — estimated IoU: the model's own quality estimate, not a measured score")
    ui.candidates = gr.Gallery(label="Candidates with their estimated IoU (the model's own) — click one to choose it",
                               columns=3, height=200, allow_preview=False, format="png", elem_id="usam-candidates",
                               interactive=False)
    with gr.Row():
        ui.multimask = gr.Checkbox(value=True, elem_id="usam-multimask",
                                   label="Three candidates for one click alone (a box and refining clicks give one mask)")
        ui.mask_file = gr.File(label="Chosen mask (PNG, 0 / 255)", interactive=False, elem_id="usam-mask-file")


def _examples_panel(ui: SimpleNamespace, backend: DemoBackend) -> None:
    if not backend.examples:
        return
    gr.Examples(
        examples=[[str(p)] for p in backend.examples],
        example_labels=[EXAMPLE_INFO.get(p.name, (None, p.name))[1] or p.name for p in backend.examples],
        inputs=[ui.upload], label="Examples (click to load; HC18 ones set their pixel size)",
        examples_per_page=6, cache_examples=False, api_visibility="private",
    )
    gr.Markdown(EXAMPLES_CREDIT, elem_id="usam-credits", elem_classes=["usam-small"])


def _adapter_panel(ui: SimpleNamespace, backend: DemoBackend, first: Session) -> None:
    """Adapter choice, pixel size and measurements, and the adapter's automatic outputs."""
    ui.adapter = gr.Dropdown(backend.adapter_choices, value=first.adapter or NONE_CHOICE,
                             label="Organ adapter (default: the first loaded)", elem_id="usam-adapter")
    # a Textbox, not gr.Number: Number shows "0" when empty
    ui.pixel_size = gr.Textbox(label="Pixel size (mm per pixel) for measurements — Enter to apply", value="",
                               placeholder="empty: no measurements (e.g. 0.115)", lines=1, max_lines=1,
                               elem_id="usam-pixel-size")
    ui.measure_kind = gr.Radio(list(MEASURE_KINDS), value=first.measure_kind,
                               label="Measure my mask as (follows the adapter)", elem_id="usam-measure-kind")
    ui.measurements = gr.Markdown("Type the pixel size (mm) to measure the masks.", elem_id="usam-measurements")
    ui.auto_overlay = gr.Image(label="Adapter: automatic segmentation, box, keypoints", type="numpy",
                               format="png", interactive=False, elem_id="usam-auto")
    ui.probs = gr.Label(label="Adapter: class probabilities", num_top_classes=5, elem_id="usam-probs")
    ui.auto_summary = gr.Markdown(elem_id="usam-auto-summary")


def _api_panel(ui: SimpleNamespace) -> None:
    """The ``/segment`` API's own small form."""
    with gr.Accordion("API: segment(image, prompts_json) -> mask", open=False):
        gr.Markdown(
            "Call it with `gradio_client`: `Client(url).predict(handle_file('scan.png'), "
            "'{\"box\": [x0, y0, x1, y1], \"adapter\": \"fetal_head\"}', api_name='/segment')` "
            "returns the best mask as a PNG (0 / 255). Keys: `box`, `points` `[[x, y], ...]` with `labels` "
            "(1 positive, 0 negative), `adapter` (a loaded adapter; default none), `multimask`. "
            "Without an adapter give a `box`: the bare backbone refuses points alone."
        )
        with gr.Row():
            ui.api_image = gr.File(label="image", type="filepath", elem_id="usam-api-image")
            ui.api_prompts = gr.Textbox(label="prompts_json", value='{"box": [220, 100, 500, 370]}', elem_id="usam-api-prompts")
            ui.api_mask = gr.Image(label="mask", type="numpy", format="png", interactive=False, elem_id="usam-api-mask")
        ui.api_run = gr.Button("Run segment", elem_id="usam-api-run")


def _outputs(ui: SimpleNamespace) -> list:
    """The components every :class:`View` fills, in :func:`outputs_of` order."""
    return [ui.state, ui.overlay, ui.candidates, ui.choice, ui.mask_file, ui.status, ui.auto_overlay, ui.probs,
            ui.auto_summary, ui.measurements, ui.prompts]


# ---------------------------------------------------------------------------------------------- events
def _wire_clicks(ui: SimpleNamespace, backend: DemoBackend, app: gr.Blocks) -> None:
    """Clicks on the image and the keyboard path.

    A click is recorded at once (cheap, in order: one at a time, every trigger runs) and segmented by a flush
    that follows it (``always_last``: a flush asked for while one is pending runs once after it, and segments
    every click recorded meanwhile). Before, a click made while the previous one was being answered was dropped
    (Gradio's default trigger mode runs nothing while the event is pending).
    """
    def on_clicks(session, clicks_json):
        result = backend.record_clicks(session, clicks_json)
        return (gr.skip(), gr.skip()) if result is None else recorded(result)

    def on_key(session, x, y, key_mode):
        if x is None or y is None:
            session.last_status = "Type the pixel X and Y first (0, 0 is the top-left corner)."
            return recorded((gr.skip(), session.last_status, True))
        return recorded(backend.record(session, x, y, key_mode))

    def on_flush(session):
        return outputs_of(backend.flush(session))

    record = {"api_visibility": "private", "show_progress": "hidden", "trigger_mode": "multiple",
              "concurrency_limit": 1, "concurrency_id": "usam-record"}
    flush = {"api_visibility": "private", "show_progress": "hidden", "trigger_mode": "always_last"}
    app.load(None, None, None, js=CLICKS_JS)
    # the page's clicks on the image (see CLICKS_JS): every change carries all recent ones
    ui.clicks.change(on_clicks, [ui.state, ui.clicks], [ui.overlay, ui.status],
                     **{**record, "trigger_mode": "always_last"}).then(on_flush, [ui.state], _outputs(ui), **flush)
    for btn, key_mode in ((ui.key_pos, MODES[0]), (ui.key_neg, MODES[1]), (ui.key_box, MODES[2])):
        btn.click(lambda s, x, y, m=key_mode: on_key(s, x, y, m), [ui.state, ui.key_x, ui.key_y], [ui.overlay, ui.status],
                  **record).then(on_flush, [ui.state], _outputs(ui), **flush)


def _wire_prompts(ui: SimpleNamespace, backend: DemoBackend) -> None:
    """Upload, candidate choice, undo, clear, multimask and click mode."""
    outs = _outputs(ui)

    def on_upload(file, session):
        # a new image (or x: none) never keeps the previous pixel size: it shows empty or the example's
        view = backend.load(file, session)
        return outputs_of(view, pixel_size_text(view.session.pixel_size))

    def on_choose(session, evt: gr.SelectData):
        return outputs_of(backend.choose(session, evt.index))

    # ``from __future__ import annotations`` turns hints into strings: give Gradio the real class so it
    # injects the event data
    on_choose.__annotations__["evt"] = gr.SelectData

    ui.upload.change(on_upload, [ui.upload, ui.state], outs + [ui.pixel_size], **QUIET)
    ui.candidates.select(on_choose, [ui.state], outs, **QUIET)
    ui.choice.input(lambda s, i: outputs_of(backend.choose(s, i)), [ui.state, ui.choice], outs, **QUIET)
    ui.undo.click(lambda s: outputs_of(backend.undo(s)), [ui.state], outs, **QUIET)
    ui.clear.click(lambda s: outputs_of(backend.clear(s)), [ui.state], outs, **QUIET)
    ui.multimask.change(lambda s, v: outputs_of(backend.set_multimask(s, v)), [ui.state, ui.multimask], outs, **QUIET)
    ui.mode.change(lambda s, m: setattr(s, "mode", m) or s, [ui.state, ui.mode], [ui.state], **QUIET)


def _wire_settings(ui: SimpleNamespace, backend: DemoBackend) -> None:
    """Adapter choice, pixel size and measurement kind."""
    outs = _outputs(ui)

    def on_adapter(session, value):
        view = backend.set_adapter(session, value)
        return outputs_of(view, view.session.mode, view.session.measure_kind)

    def on_measure(session, pixel_size, kind):
        return outputs_of(backend.set_measure(session, pixel_size, kind))

    ui.adapter.change(on_adapter, [ui.state, ui.adapter], outs + [ui.mode, ui.measure_kind], api_visibility="private")
    # user edits only (``input``): the handlers above set these components without re-triggering them
    for event in (ui.pixel_size.submit, ui.pixel_size.blur, ui.measure_kind.input):
        event(on_measure, [ui.state, ui.pixel_size, ui.measure_kind], outs, **QUIET)


def _wire_api(ui: SimpleNamespace, backend: DemoBackend) -> None:
    """``/segment``: the one public endpoint."""
    def on_segment(image, prompts_json):
        try:
            return backend.segment(image, prompts_json)
        except UsamError as exc:  # the caller's mistake: one log line, a clean message, no traceback
            log.warning("usam demo: bad /segment request: %s", str(exc).replace("\n", " "))
            raise gr.Error(str(exc), print_exception=False) from None
        except Exception as exc:  # a bug: full traceback in the log, a readable message for the client
            log.exception("usam demo: /segment failed")
            raise gr.Error(readable(exc), print_exception=False) from exc

    ui.api_run.click(on_segment, [ui.api_image, ui.api_prompts], ui.api_mask, api_name="segment",
                     api_description="Segment an image from point / box prompts; returns the best mask (PNG, 0 / 255).")


def image_tab(backend: DemoBackend, app: gr.Blocks) -> None:
    """The image mode: upload or example, clicks / box, candidates, adapter heads, measurements; and the API form."""
    ui = SimpleNamespace()
    first = backend.new_session()
    ui.state = gr.State(first)
    with gr.Row():
        with gr.Column(scale=3):
            _image_panel(ui, first)
            _result_panel(ui)
        with gr.Column(scale=2):
            _examples_panel(ui, backend)
            _adapter_panel(ui, backend, first)
    _api_panel(ui)
    _wire_prompts(ui, backend)
    _wire_clicks(ui, backend, app)
    _wire_settings(ui, backend)
    _wire_api(ui, backend)
