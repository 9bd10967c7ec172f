"""Writing a module to an ONNX file: the one exporter call shared by the runtimes' encoder cache and ``usam export``."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

#: Default (and minimum) ONNX opset.
OPSET = 17


def export_onnx_file(module: nn.Module, args: tuple, path: Path, input_names, output_names, dynamic_axes,
                     opset: int = OPSET) -> None:
    """``torch.onnx.export`` (TorchScript exporter, ``dynamo=False``: TinyViT's Python-side shapes do not trace with
    dynamo) into a per-process temp file renamed onto ``path``: several processes (DDP ranks) may build the same file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(tmp), input_names=list(input_names), output_names=list(output_names),
                          dynamic_axes=dynamic_axes, opset_version=int(opset), do_constant_folding=True, dynamo=False)
    os.replace(tmp, path)
