"""Result documents round-trip through JSON; readers ignore unknown keys; statuses have rules."""

from __future__ import annotations

import json

from farm.model.cells import Cell
from farm.model.results import SCHEMA_VERSION, CellResult, CellStatus, EnvFacts, ErrorInfo, ProbeResult, utcnow

CELL = Cell(model="m", quantization="gptq-int4", model_source="zoo:qwen2-dense-gptq4", lora="attn",
            lora_source="zoo:qwen2-dense-lora-attn", max_lora_rank=8)


def full_result() -> CellResult:
    return CellResult(
        run_id="r1",
        cell_id=CELL.id,
        cell=CELL,
        status=CellStatus.FAIL,
        probes=[ProbeResult(name="load", passed=True, metrics={"engine_build_s": 1.5}),
                ProbeResult(name="lora", passed=False, detail="same output", outputs=["a", "b"])],
        error=ErrorInfo(type="AttributeError", message="'SharedFusedMoE' object has no attribute 'w2_weight'",
                        frame="vllm/lora/layers/fused_moe.py:43", signature="abc123", probe=None),
        env=EnvFacts(vllm="0.32.0", torch="2.13.0+cpu", transformers="5.0", python="3.11.7", device="cpu"),
        timings={"engine_build": 1.5, "total": 3.0},
        peak_rss_mb=812.5,
        started_at=utcnow(),
        finished_at=utcnow(),
        log_tail="INFO ...",
    )


def test_round_trip_through_json():
    result = full_result()
    again = CellResult.model_validate_json(result.model_dump_json())
    assert again == result
    assert again.schema_version == SCHEMA_VERSION
    assert again.cell.id == CELL.id
    assert again.probe("lora").outputs == ["a", "b"]


def test_readers_ignore_unknown_keys():
    data = json.loads(full_result().model_dump_json())
    data["added_in_a_later_release"] = {"x": 1}
    data["env"]["gpu_driver"] = "570.1"
    data["probes"][0]["new_metric_block"] = [1, 2]
    again = CellResult.model_validate(data)
    assert again.status is CellStatus.FAIL
    assert not hasattr(again, "added_in_a_later_release")


def test_terminal_statuses():
    terminal = {s for s in CellStatus if s.is_terminal()}
    assert terminal == {CellStatus.PASS, CellStatus.FAIL, CellStatus.CRASH, CellStatus.TIMEOUT, CellStatus.FLAKY,
                        CellStatus.UNSUPPORTED, CellStatus.INFRA_ERROR, CellStatus.ENV_ERROR}
    assert len({s.symbol for s in CellStatus}) == len(CellStatus), "every status has its own symbol"
    assert all(s.meaning for s in CellStatus)
