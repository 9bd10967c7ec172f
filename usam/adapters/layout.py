"""An adapter directory's layout (Hugging Face Hub style, no pickles) and where one may be written.

::

    config.json                  usam config (:class:`~usam.adapters.config.AdapterConfig`)
    heads.safetensors            heads + tuned-decoder weights
    adapter_config.json          peft LoraConfig of the encoder LoRA       (only with LoRA)
    adapter_model.safetensors    encoder LoRA weights, peft format          (only with LoRA)
    metrics.json                 validation / test metrics (optional)
    README.md                    model card

These files, and only these, are written, uploaded and downloaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..io.files import write_problem

CONFIG_NAME = "config.json"
HEADS_NAME = "heads.safetensors"
LORA_CONFIG_NAME = "adapter_config.json"
LORA_NAME = "adapter_model.safetensors"
METRICS_NAME = "metrics.json"
CARD_NAME = "README.md"
#: Every file an adapter directory may hold.
ADAPTER_FILES = (CONFIG_NAME, HEADS_NAME, LORA_CONFIG_NAME, LORA_NAME, METRICS_NAME, CARD_NAME)
#: Files present only when the adapter has encoder LoRA.
LORA_FILES = (LORA_CONFIG_NAME, LORA_NAME)
#: Adapter files that may be absent (removed from the Hub repo on push when absent locally).
OPTIONAL_FILES = (LORA_CONFIG_NAME, LORA_NAME, METRICS_NAME)
#: Suffixes of pickled weights, never loaded (pickles can run code).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def is_usam_adapter_dir(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` is an adapter written by usam: nothing but adapter files, and a ``config.json`` with
    ``"library_name": "usam"``. Only such a directory (or an empty one) is ever replaced by a new adapter."""
    d = Path(directory)
    try:
        names = [p.name for p in d.iterdir()]
        if not names or any(n not in ADAPTER_FILES or not (d / n).is_file() for n in names):
            return False
        cfg = json.loads((d / CONFIG_NAME).read_bytes().decode("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and cfg.get("library_name") == "usam"


def output_problem(directory: str | os.PathLike) -> str | None:
    """Why an adapter must not be written to ``directory`` (``None`` when it may be): it must not exist yet, be
    empty, or be an adapter usam wrote (:func:`is_usam_adapter_dir`, replaced only once the new one is complete);
    nothing else is ever replaced or deleted. The current directory and its parents are refused too."""
    out = Path(directory)
    try:
        here, target = Path.cwd().resolve(), out.resolve()
    except OSError:  # pragma: no cover - the working directory was removed
        here, target = None, out.absolute()
    if here is not None and (target == here or target in here.parents):
        return "it is the current directory (or holds it): give a new folder, e.g. --output runs/NAME"
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        return "it is a file, not a folder: give a new folder"
    if out.is_dir():
        try:
            entries = sorted(p.name for p in out.iterdir())
        except OSError as exc:
            return f"it cannot be read ({exc.strerror or exc})"
        if entries and not is_usam_adapter_dir(out):
            foreign = [n for n in entries if n not in ADAPTER_FILES][:3] or entries[:3]
            return (f"the folder already holds files that are not a usam adapter's ({', '.join(foreign)}"
                    f"{', ...' if len(entries) > 3 else ''}): give a new or empty folder")
    return write_problem(out.absolute().parent)  # the adapter is staged beside the folder, in its parent
