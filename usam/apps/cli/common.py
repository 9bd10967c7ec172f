"""What every ``usam`` command shares: the stderr log, the model flags and the one model builder.

Library imports inside the functions below are deliberate: ``usam --help`` and argument errors answer without
importing torch (about 2 s); nothing here dodges an import cycle.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

from ...argtypes import positive_int  # noqa: F401 (the CLI's commands take it from here)
from ...backbones import DEFAULT_BACKBONE


def log(msg: str) -> None:
    """One line to stderr, flushed (stdout stays for results)."""
    print(msg, file=sys.stderr, flush=True)


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number (mm per pixel)")
    return v


def add_model_args(p: argparse.ArgumentParser, adapters: bool = True, device: bool = False) -> None:
    """``--backbone --checkpoint --precision --runtime`` [``--adapters``] [``--device``]."""
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, help=f"backbone name (see `usam backbones`; default: {DEFAULT_BACKBONE})")
    p.add_argument("--checkpoint", default=None, help="weights file for sam_vit_b/l/h (or another LiteMedSAM .pth)")
    p.add_argument("--precision", default="auto", choices=["fp32", "bf16", "int8", "auto"],
                   help="encoder precision: auto (default) = the int8 encoder of `usam export int8` on OpenVINO where the "
                        "CPU has VNNI / AMX, its check passed and it timed faster than the float choice (measured "
                        "once), else bf16 where the CPU/GPU has native bf16 (on OpenVINO: where "
                        "it timed faster than fp32 on this CPU, measured once), else fp32")
    p.add_argument("--runtime", default=None, choices=["auto", "torch", "openvino", "onnx"],
                   help="encoder runtime: auto (default, or $USAM_RUNTIME) = OpenVINO on a CPU when installed, else "
                        "eager PyTorch; onnx = ONNX Runtime. Compiled encoders are built once and cached in $USAM_CACHE")
    if adapters:
        p.add_argument("--adapters", nargs="*", default=[], metavar="DIR_OR_HUB_ID",
                       help="adapters to load: directories or Hub ids in the local HF cache")
    if device:
        p.add_argument("--device", default="auto", help="torch device: auto (CUDA when available, else CPU), cpu, cuda, cuda:1 ...")


def build_model(args, adapters=None):
    """The model the command line asks for: ``args.backbone`` / ``checkpoint`` / ``precision`` / ``runtime`` /
    ``device`` (``auto``: CUDA when available) with ``adapters`` (default ``args.adapters``)."""
    import torch

    from ...errors import ConfigError
    from ...model import UsamModel, check_device

    device = getattr(args, "device", "auto") or "auto"
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        check_device(device)
    except ConfigError as exc:
        raise ConfigError(f"--{exc}") from None
    adapters = list(getattr(args, "adapters", None) or [] if adapters is None else adapters)
    t0 = time.perf_counter()
    model = UsamModel.from_pretrained(backbone=args.backbone, checkpoint=args.checkpoint, adapters=adapters,
                                      precision=args.precision, device=device, runtime=getattr(args, "runtime", None))
    log(f"usam: loaded {model.backbone.name} on {device} in {time.perf_counter() - t0:.2f} s (precision {model.precision}, "
        f"runtime {model.runtime})" + (f", adapters {list(model.adapters)}" if len(model.adapters) else ""))
    return model
