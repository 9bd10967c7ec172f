"""Which precision the OpenVINO encoder runs fastest in on this CPU: measured once, remembered.

Native bf16 (AVX-512 bf16 / AMX in the CPU flags) is not always the faster choice: on an AMD EPYC with AVX-512 bf16
OpenVINO's bf16 hint ran the LiteMedSAM encoder in 422 ms against 804 ms in fp32, on an Intel Xeon with AVX-512
bf16 and no AMX in 670 ms against 497 ms (``benchmarks/bench_interleaved.py --threads 2``, quiet machines), and its
prompt decoder 51 against 46 ms. So ``precision auto`` on the OpenVINO runtime times the two on the backbone's own
encoder the first time and keeps the answer in ``$USAM_CACHE/runtime/precision/`` (and in the process), keyed by
the CPU, its bf16 flags, the OpenVINO version, the backbone and the thread count. bf16 is taken only when it is at
least :data:`BF16_MARGIN` times as fast: fp32 is the exact one. Timings that vary by more than
:data:`STEADY_SPREAD` between runs (a busy machine) decide for the process only: the next process times again.

int8 (a checked encoder from ``usam export int8``) is timed the same way against that float choice before ``precision
auto`` takes it: on an Intel Xeon with AMX, OpenVINO ran the LiteMedSAM encoder in 190 ms in int8 against 153 ms in
bf16 (AMX's bf16 tiles beat its int8 path with the quantise / dequantise steps around it), while on a Xeon with VNNI
and no native bf16, int8 ran 1.22x faster than fp32. int8 is taken only when at least :data:`INT8_MARGIN` times as
fast as the float choice: it costs a little accuracy (a GT-box Dice drop of at most 0.005, checked).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import threading
import time

import torch

#: bf16 must be this many times faster than fp32 to be chosen (a near tie keeps the exact fp32).
BF16_MARGIN = 1.1
#: int8 must be this many times faster than the float choice (it is the less exact one).
INT8_MARGIN = 1.1
#: Timed runs per precision (after one warm-up each), alternating so a busy spell hits both; the fastest counts.
ROUNDS = 3
#: A precision's slowest timed run may be at most this many times its fastest for the answer to be kept on disk.
STEADY_SPREAD = 1.5

_CHOSEN: dict[str, str] = {}
_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def cpu_signature() -> str:
    """The CPU's model name and its bf16-related flags (what the choice depends on besides software versions)."""
    name, flags = "", set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and not name:
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    bf16 = sorted(f for f in flags if "bf16" in f or f.startswith("amx"))
    return f"{name}|{','.join(bf16)}"


def _record_path(key: str):
    from . import runtime_root

    return runtime_root() / "precision" / f"{key}.json"


def _time(compiled, x: torch.Tensor) -> float:
    t0 = time.perf_counter()
    compiled(x)
    return time.perf_counter() - t0


def measure(backbone, log=None, precisions: tuple[str, ...] = ("fp32", "bf16")) -> dict:
    """Seconds per image of ``backbone``'s encoder (active LoRA merged) on OpenVINO in each of ``precisions`` (``fp32``,
    ``bf16`` = OpenVINO's bf16 hint, ``int8`` = the checked model of ``usam export int8``): ``{precision: s, ...,
    "steady": bool}`` (the fastest of :data:`ROUNDS` runs each, alternating, after a warm-up; ``steady``: no
    precision's slowest run above :data:`STEADY_SPREAD` times its fastest). bf16 is ``inf`` where OpenVINO sees no
    native bf16 (it would run fp32)."""
    from . import build_compiled_encoder

    compiled = {p: build_compiled_encoder(backbone, "openvino", p, log) for p in precisions}
    s = int(backbone.input_size)
    x = torch.rand(1, 3, s, s, generator=torch.Generator().manual_seed(0))
    runs = {p: [] for p in compiled}
    for c in compiled.values():
        _time(c, x)  # warm-up: the first inference allocates
    for _ in range(ROUNDS):
        for p, c in compiled.items():
            runs[p].append(_time(c, x))
    if "bf16" in compiled and compiled["bf16"].precision != "bf16":  # OpenVINO sees no native bf16: it would run fp32
        runs["bf16"] = [float("inf")]
    steady = all(max(t) <= STEADY_SPREAD * min(t) for t in runs.values() if min(t) != float("inf"))
    return {**{p: min(t) for p, t in runs.items()}, "steady": steady}


def _timed_choice(backbone, precisions: tuple[str, ...], decide, purpose: str, log=None) -> str:
    """One of ``precisions``: ``decide(seconds)`` on :func:`measure`'s timings of them the first time, then remembered
    in the process and (when the timings were steady) on disk, keyed by the CPU, the OpenVINO / usam / torch
    versions, the backbone, the thread count and ``precisions``. ``purpose`` ends the log line that reports the timing."""
    import openvino as ov  # this runtime's package: the caller resolved runtime openvino

    from . import versions_tag  # usam / torch: what the exported encoder (and its int8 model) depends on

    threads = torch.get_num_threads()
    compared = " vs ".join(precisions)
    key = hashlib.sha256(f"{cpu_signature()}|openvino {ov.__version__}|{versions_tag()}|{backbone.name}|"
                         f"{backbone.input_size}|threads {threads}|{compared}".encode()).hexdigest()[:24]
    with _LOCK:
        if key in _CHOSEN:
            return _CHOSEN[key]
        path = _record_path(key)
        try:
            choice = json.loads(path.read_text())["precision"]
        except (OSError, ValueError, KeyError, TypeError):
            choice = None
        if choice not in precisions:
            log = log or (lambda m: print(m, file=sys.stderr))
            log(f"usam: timing the OpenVINO {backbone.name} encoder in {compared} on this CPU (once; kept in "
                f"{path.parent})")
            seconds = measure(backbone, log, precisions)
            choice = decide(seconds)
            ms = {p: round(seconds[p] * 1e3, 1) for p in precisions if seconds[p] != float("inf")}
            log(f"usam: OpenVINO {backbone.name} encoder " + ", ".join(f"{p} {v:.0f} ms" for p, v in ms.items())
                + f" per image on {threads} thread(s): {choice} is {purpose}")
            if not seconds.get("steady", True):
                log(f"usam: those timings varied by more than {STEADY_SPREAD}x between runs (a busy machine?): the "
                    "choice holds for this process only and is timed again next time")
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps({"precision": choice, "compared": list(precisions), "cpu": cpu_signature(),
                                           "openvino": ov.__version__, "backbone": backbone.name, "threads": threads,
                                           "ms": ms}, indent=1))
                os.replace(tmp, path)
        _CHOSEN[key] = choice
        return choice


def openvino_float_precision(backbone, log=None) -> str:
    """``bf16`` or ``fp32``: whichever runs ``backbone``'s encoder faster on OpenVINO on this CPU (bf16 only when
    :data:`BF16_MARGIN` times faster), measured by :func:`measure` the first time and remembered on disk and in the
    process. Call it only where the CPU has native bf16 (elsewhere bf16 is emulated, ~20x slower)."""
    return _timed_choice(backbone, ("fp32", "bf16"),
                         lambda s: "bf16" if s["bf16"] * BF16_MARGIN <= s["fp32"] else "fp32",
                         "this CPU's faster float precision (precision auto's choice short of int8, and the compiled "
                         "prompt decoder's)", log)


def openvino_int8_or(backbone, float_choice: str, log=None) -> str:
    """``int8`` where the checked int8 encoder of ``backbone`` (``usam export int8``) runs at least :data:`INT8_MARGIN`
    times faster on OpenVINO on this CPU than ``float_choice`` (``fp32`` / ``bf16``: precision auto's float
    choice), else ``float_choice``; timed once and remembered like :func:`openvino_float_precision`. Call it only
    where such an encoder exists (:func:`usam.runtime.checked_int8`)."""
    return _timed_choice(backbone, (float_choice, "int8"),
                         lambda s: "int8" if s["int8"] * INT8_MARGIN <= s[float_choice] else float_choice,
                         "precision auto's choice on this CPU", log)
