"""One compiled ONNX graph on the CPU: OpenVINO or ONNX Runtime behind the same ``run(arrays) -> arrays`` call.

Shared by the compiled encoder (:class:`usam.runtime.CompiledEncoder`) and the compiled prompt decoder
(:mod:`usam.runtime.decoder`).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np


class OnnxSession:
    """``run([x0, x1, ...]) -> [y0, y1, ...]`` float32 arrays, inputs in the graph's input order.

    Args:
      name: ``openvino`` or ``onnx`` (ONNX Runtime, CPU execution provider).
      path: the ``.onnx`` file.
      precision: ``fp32`` or ``bf16``: OpenVINO's bf16 hint, only where the CPU has native bf16 (its
        :attr:`precision` says what was used); ONNX Runtime computes fp32 either way.
      threads: intra-op threads.
    """

    def __init__(self, name: str, path: Path, precision: str, threads: int):
        self.name, self.path, self.precision = name, Path(path), precision
        if name == "openvino":
            import openvino as ov  # optional package, imported only for this runtime

            core = ov.Core()
            # bf16 only where the CPU computes it natively: elsewhere OpenVINO emulates it (measured 20x slower
            # than fp32 on an AVX2-only EPYC), so fp32 is used and reported
            native_bf16 = "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
            self.precision = "bf16" if precision == "bf16" and native_bf16 else "fp32"
            cfg = {"INFERENCE_NUM_THREADS": int(threads), "PERFORMANCE_HINT": "LATENCY",
                   "INFERENCE_PRECISION_HINT": "bf16" if self.precision == "bf16" else "f32"}
            self._compiled = core.compile_model(core.read_model(str(path)), "CPU", cfg)
            self._request = self._compiled.create_infer_request()
        else:
            import onnxruntime as ort  # optional package, imported only for this runtime

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = int(threads)
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self._sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            self._inputs = [i.name for i in self._sess.get_inputs()]
        self._lock = threading.Lock()  # one infer request: serialise callers (the demo serves several threads)

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in arrays]
        with self._lock:
            if self.name == "openvino":
                res = self._request.infer(dict(enumerate(arrays)))
                return [np.array(res[out], dtype=np.float32, copy=True) for out in self._compiled.outputs]
            return [np.asarray(o, dtype=np.float32) for o in self._sess.run(None, dict(zip(self._inputs, arrays)))]
