"""Compiled prompt decoder: SAM's prompt encoder + mask decoder on OpenVINO / ONNX Runtime for the click path.

A click on a cached embedding costs only the prompt decoder; eager PyTorch spends most of it in small ops and
thread hand-offs (2 threads on a busy machine were 4x slower than 1), a compiled graph fuses them
(``benchmarks/bench_speed.py`` rows ``click_*``). Built like the compiled encoder: from the decoder as
:func:`usam.adapters.lora.merged_copy` leaves it (a tuned decoder's LoRA merged), exported once to ONNX and cached
under ``$USAM_CACHE/runtime/<key>/decoder.onnx``, the key hashing the weights and versions; in memory one compiled
graph per decoder module, rebuilt when its weights change (tensor versions, so training steps are seen).

Graph (segment-anything's ONNX conventions, as ``usam export``'s ``decoder.onnx``)::

    image_embeddings (1, C, h, w), point_coords (1, N, 2) model-input px, point_labels (1, N) in {-1, 0, 1, 2, 3},
    mask_input (1, 1, 256, 256), has_mask_input (1,)  ->  masks (1, 4, 256, 256), iou_predictions (1, 4)
"""

from __future__ import annotations

import threading
import weakref

import torch
from torch import nn

from ..adapters.lora import merged_copy
from ..backbones import LOW_RES
from ..backbones.sam_style import predict_masks
from . import cached_onnx, weights_key
from .onnx import export_onnx_file
from .session import OnnxSession

INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input")
OUTPUTS = ("masks", "iou_predictions")


class PromptGraph(nn.Module):
    """SAM's prompt encoder + mask decoder with array inputs (segment-anything's ONNX conventions: padding -1, box
    corners as point labels 2 / 3); the graph of ``usam export``'s ``decoder.onnx`` and of the compiled decoder.

    ``forward(image_embeddings (1, C, h, w), point_coords (1, N, 2), point_labels (1, N),
    mask_input (1, 1, 256, 256), has_mask_input (1,))`` -> ``masks (1, 4, 256, 256)``, ``iou_predictions (1, 4)``.
    """

    def __init__(self, prompt_encoder: nn.Module, mask_decoder: nn.Module, input_size: int):
        super().__init__()
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.input_size = int(input_size)

    def _embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``(1, N, 2)`` px, ``(1, N)`` labels -> sparse embeddings ``(1, N, C)`` (``PromptEncoder._embed_points``)."""
        pe = self.prompt_encoder
        emb = pe.pe_layer._pe_encoding((coords + 0.5) / self.input_size)  # pixel centres, normalised
        labels = labels.unsqueeze(-1)
        emb = emb * (labels != -1).to(emb.dtype) + pe.not_a_point_embed.weight * (labels == -1).to(emb.dtype)
        for i in range(pe.num_point_embeddings):
            emb = emb + pe.point_embeddings[i].weight * (labels == i).to(emb.dtype)
        return emb

    def forward(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input):
        pe = self.prompt_encoder
        sparse = self._embed_points(point_coords, point_labels)
        dense = has_mask_input * pe.mask_downscaling(mask_input)
        dense = dense + (1 - has_mask_input) * pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return predict_masks(self.mask_decoder, image_embeddings, pe.get_dense_pe(), sparse, dense)


class CompiledDecoder:
    """``__call__(embedding, coords, labels, mask_input | None)`` -> low-res logits ``(1, 4, 256, 256)`` and
    IoU predictions ``(1, 4)`` (index 0 the single-mask output, 1..3 the multimask candidates), float32 tensors.

    ``coords (1, N, 2)`` model-input px and ``labels (1, N)`` as the graph takes them (box corners 2 / 3, padding -1).
    """

    def __init__(self, session: OnnxSession):
        self.session = session
        self._no_mask = torch.zeros(1, 1, LOW_RES, LOW_RES)

    def __call__(self, embedding, coords, labels, mask_input=None):
        has = torch.ones(1) if mask_input is not None else torch.zeros(1)
        mask = mask_input if mask_input is not None else self._no_mask
        arrays = [t.detach().cpu().float().numpy() for t in (embedding, coords, labels, mask, has)]
        masks, iou = self.session.run(arrays)
        return torch.from_numpy(masks), torch.from_numpy(iou)


def _export(prompt_encoder, mask_decoder, input_size: int, name: str, log=None):
    """The decoder's ONNX file, exported once per weights (LoRA merged) and versions."""
    graph = PromptGraph(merged_copy(prompt_encoder).cpu().float().eval(), merged_copy(mask_decoder).cpu().float().eval(),
                        input_size).eval()
    c = graph.prompt_encoder.embed_dim
    h, w = graph.prompt_encoder.image_embedding_size
    args = (torch.zeros(1, c, h, w), torch.zeros(1, 2, 2), torch.tensor([[1.0, -1.0]]),
            torch.zeros(1, 1, LOW_RES, LOW_RES), torch.zeros(1))
    dynamic = {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}}
    return cached_onnx(f"decoder|{input_size}", graph, "decoder.onnx",
                       lambda path: export_onnx_file(graph, args, path, INPUTS, OUTPUTS, dynamic),
                       f"the {name} prompt decoder", log)


_BUILT: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, CompiledDecoder]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def compiled_decoder(prompt_encoder, mask_decoder, input_size: int, name: str, log=None,
                     precision: str = "fp32") -> CompiledDecoder:
    """The compiled decoder (runtime ``name``: ``openvino`` / ``onnx``) for these modules' current weights;
    ``precision`` bf16: OpenVINO's bf16 hint where the CPU computes bf16 natively (fp32 elsewhere and on ONNX Runtime;
    compiled fp32 59 ms -> bf16 38 ms p50 a click on 2 AVX-512-bf16 cores, ``benchmarks/bench_click.py``)."""
    key = (name, torch.get_num_threads(), precision, *weights_key(prompt_encoder, mask_decoder))
    with _LOCK:
        hit = _BUILT.get(mask_decoder)
        if hit is not None and hit[0] == key:
            return hit[1]
        path = _export(prompt_encoder, mask_decoder, input_size, name, log)
        built = CompiledDecoder(OnnxSession(name, path, precision, torch.get_num_threads()))
        _BUILT[mask_decoder] = (key, built)
        return built
