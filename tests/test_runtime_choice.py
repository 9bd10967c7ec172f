"""``precision auto`` on OpenVINO takes bf16 only where it measured faster (:mod:`usam.runtime.choose`), and a checked
int8 encoder only where it measured faster than that float choice: timed once, remembered on disk and in the process;
a near tie keeps the more exact one; CPUs without native bf16 never time bf16."""

from __future__ import annotations

import json

import pytest
import torch

from usam.runtime import choose

pytest.importorskip("openvino")


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """An empty runtime cache and no choice remembered in the process; yields the cache folder."""
    monkeypatch.setenv("USAM_CACHE", str(tmp_path))
    monkeypatch.setattr(choose, "_CHOSEN", {})
    return tmp_path


@pytest.mark.parametrize("seconds, expected", [
    ({"fp32": 0.50, "bf16": 0.20}, "bf16"),  # AMX-like: bf16 much faster
    ({"fp32": 0.48, "bf16": 0.64}, "fp32"),  # the Intel Xeon without AMX this was found on
    ({"fp32": 0.50, "bf16": 0.47}, "fp32"),  # faster, but by less than BF16_MARGIN: the exact one stays
])
def test_the_faster_precision_is_chosen_once_and_remembered(fresh, tiny_vit, monkeypatch, seconds, expected):
    calls = []

    def fake_measure(backbone, log=None, precisions=("fp32", "bf16")):
        calls.append(backbone.name)
        assert precisions == ("fp32", "bf16")
        return dict(seconds)

    monkeypatch.setattr(choose, "measure", fake_measure)
    assert choose.openvino_float_precision(tiny_vit, log=lambda m: None) == expected
    assert choose.openvino_float_precision(tiny_vit, log=lambda m: None) == expected  # the process remembers
    assert len(calls) == 1
    record, = fresh.glob("runtime/precision/*.json")
    saved = json.loads(record.read_text())
    assert saved["precision"] == expected and saved["backbone"] == tiny_vit.name
    assert saved["compared"] == ["fp32", "bf16"]
    assert saved["ms"] == {p: round(v * 1e3, 1) for p, v in seconds.items()}

    def no_measure(backbone, log=None, precisions=()):
        raise AssertionError("measured again although the choice is on disk")

    monkeypatch.setattr(choose, "measure", no_measure)
    monkeypatch.setattr(choose, "_CHOSEN", {})  # a new process: read from disk
    assert choose.openvino_float_precision(tiny_vit, log=lambda m: None) == expected
    record.write_text("{not json")  # a damaged record is measured again, not trusted
    monkeypatch.setattr(choose, "_CHOSEN", {})
    monkeypatch.setattr(choose, "measure", fake_measure)
    assert choose.openvino_float_precision(tiny_vit, log=lambda m: None) == expected
    assert len(calls) == 2 and json.loads(record.read_text())["precision"] == expected


def test_unsteady_timings_decide_for_the_process_only(fresh, tiny_vit, monkeypatch):
    """Timings from a busy spell (``steady`` false) are used now but not written: a new process times again."""
    calls = []

    def busy(backbone, log=None, precisions=()):
        calls.append(1)
        return {"fp32": 0.9, "bf16": 0.5, "steady": False}

    monkeypatch.setattr(choose, "measure", busy)
    said = []
    assert choose.openvino_float_precision(tiny_vit, log=said.append) == "bf16"
    assert choose.openvino_float_precision(tiny_vit, log=said.append) == "bf16" and len(calls) == 1
    assert not list(fresh.glob("runtime/precision/*.json"))
    assert any("timed again next time" in m for m in said)
    monkeypatch.setattr(choose, "_CHOSEN", {})  # a new process, now quiet: measured again and kept
    monkeypatch.setattr(choose, "measure", lambda backbone, log=None, precisions=(): {"fp32": 0.5, "bf16": 0.9, "steady": True})
    assert choose.openvino_float_precision(tiny_vit, log=said.append) == "fp32"
    record, = fresh.glob("runtime/precision/*.json")
    assert json.loads(record.read_text())["ms"] == {"fp32": 500.0, "bf16": 900.0}


def test_measure_calls_a_busy_spell_unsteady(fresh, tiny_vit, monkeypatch):
    """One slow run among the rounds (the machine busy for a moment) makes the timing unsteady."""
    times = iter([0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1] + [0.1, 0.1, 0.5, 0.1, 0.1, 0.1, 0.1, 0.1])
    monkeypatch.setattr(choose, "_time", lambda compiled, x: next(times))
    assert choose.measure(tiny_vit, log=lambda m: None)["steady"] is True
    assert choose.measure(tiny_vit, log=lambda m: None)["steady"] is False


def test_the_choice_is_kept_apart_per_thread_count(fresh, tiny_vit, monkeypatch):
    answers = iter([{"fp32": 0.5, "bf16": 0.2}, {"fp32": 0.5, "bf16": 0.9}])
    monkeypatch.setattr(choose, "measure", lambda backbone, log=None, precisions=(): next(answers))
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert choose.openvino_float_precision(tiny_vit, log=lambda m: None) == "bf16"
        torch.set_num_threads(2)
        assert choose.openvino_float_precision(tiny_vit, log=lambda m: None) == "fp32"
    finally:
        torch.set_num_threads(saved)
    assert len(list(fresh.glob("runtime/precision/*.json"))) == 2


def test_auto_times_openvino_only_where_bf16_is_native(fresh, tiny_vit, monkeypatch):
    from usam import model as model_module
    from usam.model import UsamModel, float_precision, resolve_precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(choose, "measure", lambda backbone, log=None, precisions=(): {"fp32": 0.5, "bf16": 0.9})
    monkeypatch.setattr(model_module, "native_bf16_cpu", lambda: True)
    assert float_precision(cpu, "openvino", tiny_vit) == "fp32"  # timed: bf16 slower here
    assert resolve_precision("auto", cpu, "openvino", tiny_vit) == "fp32"
    assert UsamModel(tiny_vit, precision="auto", runtime="openvino").decoder_precision() == "fp32"
    assert float_precision(cpu, "torch", tiny_vit) == "bf16"  # eager autocast keeps the flag rule
    assert resolve_precision("bf16", cpu, "openvino", tiny_vit) == "bf16"  # asked for: not second-guessed
    monkeypatch.setattr(model_module, "native_bf16_cpu", lambda: False)
    monkeypatch.setattr(choose, "_CHOSEN", {})
    monkeypatch.setattr(choose, "measure", lambda backbone, log=None, precisions=(): pytest.fail("timed without native bf16"))
    assert float_precision(cpu, "openvino", tiny_vit) == "fp32"


def test_measure_times_the_real_compiled_encoder(fresh, tiny_vit):
    """On the real runtime: both precisions time in positive seconds (bf16 ``inf`` where OpenVINO has no native
    bf16: it would run fp32), and the encoder's ONNX file is the one the runtime cache keeps."""
    seconds = choose.measure(tiny_vit, log=lambda m: None)
    assert set(seconds) == {"fp32", "bf16", "steady"} and isinstance(seconds["steady"], bool)
    assert 0 < seconds["fp32"] < 60
    assert seconds["bf16"] > 0
    assert list(fresh.glob("runtime/*/encoder.onnx"))


@pytest.mark.parametrize("float_choice, seconds, expected", [
    ("bf16", {"bf16": 0.153, "int8": 0.190}, "bf16"),  # the Intel Xeon with AMX: bf16 beats int8
    ("bf16", {"bf16": 0.422, "int8": 0.337}, "int8"),  # the AMD EPYC with AVX-512 bf16 + VNNI
    ("fp32", {"fp32": 0.497, "int8": 0.321}, "int8"),  # the Xeon with VNNI, no AMX (bf16 slower than fp32 there)
    ("fp32", {"fp32": 0.300, "int8": 0.290}, "fp32"),  # faster by less than INT8_MARGIN: the exact one stays
])
def test_int8_is_taken_only_where_it_times_faster_than_the_float_choice(fresh, tiny_vit, monkeypatch, float_choice,
                                                                         seconds, expected):
    calls = []

    def fake_measure(backbone, log=None, precisions=()):
        calls.append(precisions)
        return dict(seconds)

    monkeypatch.setattr(choose, "measure", fake_measure)
    said = []
    assert choose.openvino_int8_or(tiny_vit, float_choice, log=said.append) == expected
    assert choose.openvino_int8_or(tiny_vit, float_choice, log=said.append) == expected
    assert calls == [(float_choice, "int8")]  # timed once, the two compared
    assert any("int8" in m and "ms" in m for m in said)
    record, = fresh.glob("runtime/precision/*.json")
    assert json.loads(record.read_text())["compared"] == [float_choice, "int8"]
    # the float choice's own record is apart: bf16 vs fp32 is timed on its own
    monkeypatch.setattr(choose, "measure", lambda backbone, log=None, precisions=(): {"fp32": 0.5, "bf16": 0.2})
    assert choose.openvino_float_precision(tiny_vit, log=said.append) == "bf16"
    assert len(list(fresh.glob("runtime/precision/*.json"))) == 2


def test_auto_takes_a_checked_int8_encoder_only_where_it_timed_faster(fresh, tiny_vit, monkeypatch):
    """resolve_precision: int8 needs VNNI / AMX, a checked model and the timing; the timing is not run without both."""
    from usam import model as model_module
    from usam import runtime
    from usam.model import resolve_precision
    from usam.runtime import quantize

    cpu = torch.device("cpu")
    monkeypatch.setattr(model_module, "native_bf16_cpu", lambda: True)
    timings = {("fp32", "bf16"): {"fp32": 0.4, "bf16": 0.15}, ("bf16", "int8"): {"bf16": 0.15, "int8": 0.19}}
    timed = []

    def fake_measure(backbone, log=None, precisions=()):
        timed.append(precisions)
        return dict(timings[precisions])

    monkeypatch.setattr(choose, "measure", fake_measure)
    monkeypatch.setattr(quantize, "int8_capable", lambda: True)
    monkeypatch.setattr(runtime, "checked_int8", lambda backbone: False)
    assert resolve_precision("auto", cpu, "openvino", tiny_vit) == "bf16"
    assert timed == [("fp32", "bf16")]  # no checked int8: int8 never timed
    monkeypatch.setattr(runtime, "checked_int8", lambda backbone: True)
    assert resolve_precision("auto", cpu, "openvino", tiny_vit) == "bf16"  # AMX-like: bf16 faster than int8
    assert timed == [("fp32", "bf16"), ("bf16", "int8")]
    assert resolve_precision("int8", cpu, "openvino", tiny_vit) == "int8"  # asked for: not second-guessed
    monkeypatch.setattr(choose, "_CHOSEN", {})
    monkeypatch.setenv("USAM_CACHE", str(fresh / "other"))
    timings[("bf16", "int8")] = {"bf16": 0.42, "int8": 0.34}  # EPYC-like
    assert resolve_precision("auto", cpu, "openvino", tiny_vit) == "int8"
    monkeypatch.setattr(quantize, "int8_capable", lambda: False)
    monkeypatch.setattr(choose, "measure", lambda *a, **k: pytest.fail("timed int8 without VNNI / AMX"))
    assert resolve_precision("auto", cpu, "openvino", tiny_vit) == "bf16"  # remembered float choice, no int8
