"""Synthetic runs of a large nightly-like job, written into a real store as results and manifests.

For tests and benchmarks of the page and of aggregation at a scale no CPU machine can
run for real: 50 rows (model × quantization) × 40 columns (LoRA × version) by default,
every status, a handful of root causes with tracebacks, env facts per version, and
several nightly runs in a row with regressions and fixes between them. Everything is
derived from a hash of the cell and the night, so the same call writes the same store.

With ``hostile=True`` every free-text field that results carry (model, quantization and
adapter names, error messages and frames, probe names and details, env facts, job and
run names) holds markup and script, for the page's escaping tests.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from farm.model.cells import Cell
from farm.model.results import CellResult, CellStatus, EnvFacts, ErrorInfo, ProbeResult, RunManifest
from farm.model.spec import Engine
from farm.report.aggregate import aggregate
from farm.store import Store, manifest_key, put_result

HOSTILE = [
    "<script>window.__pwned=(window.__pwned||0)+1</script>",
    '"><img src=x onerror="window.__pwned=(window.__pwned||0)+1">',
    "</script><script>window.__pwned=1</script>",
    "<svg onload=window.__pwned=1>",
    "javascript:window.__pwned=1",
    "{{7*7}} ${7*7} &amp; &lt;b&gt; \u2028 \u2029",
    "\x1b[2J\x1b]0;pwned\x07\x1b[31m red \x9b0m",  # a terminal's: clear the screen, retitle the window, colour
]

FAMILIES = ["qwen2", "qwen2-moe", "llama3", "mixtral", "deepseek-v2", "phi3", "gemma2", "mistral", "olmoe",
            "granite", "internlm2", "baichuan2", "chatglm3", "starcoder2", "falcon", "dbrx", "jamba", "minicpm",
            "exaone", "stablelm", "cohere", "arctic", "yi", "persimmon", "gptj"]
QUANTS = ["none", "gptq-int4", "awq-int4", "fp8", "ct-w4a16"]
LORAS = ["none", "attn", "mlp", "all"]
VERSIONS = ["v0.8.5", "v0.9.0", "v0.9.1", "v0.9.2", "v0.10.0", "v0.10.1", "v0.10.2", "v0.11.0", "v0.11.1", "nightly"]
MOE = ("moe", "mixtral", "deepseek", "dbrx", "jamba", "arctic")

ROOT_CAUSES = {
    "shared-moe-lora": ("AttributeError", "'SharedFusedMoE' object has no attribute 'w2_weight'",
                        "vllm/lora/layers/fused_moe.py:43", "FusedMoEWithLoRA.__init__"),
    "awq-old": ("ValueError", "Quantization method awq does not support LoRA with more than 1 adapter slot",
                "vllm/model_executor/layers/quantization/awq.py:118", "AWQConfig.get_quant_method"),
    "fp8-marlin": ("AssertionError", "marlin kernels need size_n divisible by 64, got 1408",
                   "vllm/model_executor/layers/quantization/utils/marlin_utils.py:214", "check_marlin_supports_shape"),
    "nightly-sampler": ("TypeError", "SamplingParams.__init__() got an unexpected keyword argument 'logprobs_mode'",
                        "vllm/v1/sample/sampler.py:77", "Sampler.forward"),
    "lora-rank": ("ValueError", "LoRA rank 64 is greater than max_lora_rank 16",
                  "vllm/lora/models.py:309", "LoRAModel.from_local_checkpoint"),
}


@dataclass(frozen=True)
class Shape:
    rows: int = 50  # model × quantization
    columns: int = 40  # LoRA × version
    nights: int = 3


START = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)


def write_runs(store: Store, shape: Shape = Shape(), *, job_name: str = "nightly", hostile: bool = False,
               start: datetime = START, aggregate_runs: bool = True) -> list[str]:
    """Write ``shape.nights`` runs of one job into ``store`` (one a day from ``start``); returns their run ids.

    Each run is aggregated as the driver would at its end, unless ``aggregate_runs`` is false
    (results that arrived, with no page yet: what ``farm dashboard`` picks up).
    """
    cells = _cells(shape, hostile)
    run_ids = []
    for night in range(shape.nights):
        run_id = f"{job_name}-{(start + timedelta(days=night)):%Y%m%d}" + ("-<b>x</b>" if hostile else "")
        started = start + timedelta(days=night)
        manifest = RunManifest(
            run_id=run_id, job_name=_text(job_name, hostile, 1), job={"name": job_name}, cells=cells,
            launched_by="nightly@ci", farm_version="0.1.0", started_at=started,
            finished_at=started + timedelta(hours=2, minutes=night),
        )
        store.put(manifest_key(run_id), manifest.model_dump_json().encode(), overwrite=True)
        for i, cell in enumerate(cells):
            result = _result(cell, i, run_id, night, shape.nights, started, hostile)
            if result is not None:
                put_result(store, result)
        if aggregate_runs:
            aggregate(store, run_id)
        run_ids.append(run_id)
    return run_ids


def _cells(shape: Shape, hostile: bool) -> list[Cell]:
    distinct = len(QUANTS) * len(FAMILIES) * 2  # rows past these get a numbered model, so every cell id is distinct
    rows = [(f"{FAMILIES[i // len(QUANTS) % len(FAMILIES)]}-{['0.5b', '7b'][i // (len(QUANTS) * len(FAMILIES)) % 2]}"
             f"{'' if i < distinct else f'-{i // distinct}'}", QUANTS[i % len(QUANTS)]) for i in range(shape.rows)]
    columns = [(LORAS[i // len(VERSIONS) % len(LORAS)], VERSIONS[i % len(VERSIONS)] +
                ("" if i < len(LORAS) * len(VERSIONS) else f"-{i}")) for i in range(shape.columns)]
    cells = []
    for r, (model, quant) in enumerate(rows):
        if hostile and r == 1:
            model = _text(model, True, 0) + HOSTILE[-1]  # markup for the page, control sequences for a terminal
        for lora, version in columns:
            cells.append(Cell(
                model=model,
                quantization=_text(quant, hostile and r == 2, r),
                model_source=f"/checkpoints/{model}-{quant}",
                lora=_text(lora, hostile and lora != "none", 3),
                lora_source=None if lora == "none" else f"/adapters/{model}-{lora}",
                max_lora_rank=None if lora == "none" else 16,
                engine=Engine(name=version, kind="current"),
            ))
    return cells


def _result(cell: Cell, index: int, run_id: str, night: int, nights: int, started: datetime,
            hostile: bool) -> CellResult | None:
    roll = _roll(cell.id, night)
    if hostile:  # every status and every root cause in a few cells, so each carrier of text is exercised
        status = [s for s in CellStatus if s is not CellStatus.RUNNING][(index + night) % (len(CellStatus) - 1)]
        cause: str | None = list(ROOT_CAUSES)[index % len(ROOT_CAUSES)] if index % 2 else None
    else:
        status, cause = _verdict(cell, night, nights, roll, _roll(cell.id, -1))
    if status is CellStatus.PENDING:
        return None  # not run: no result document
    moe = any(m in cell.model for m in MOE)
    version = cell.engine.name
    nightly = f"0.11.2.dev{40 + night}+g{hashlib.sha1(f'{night}'.encode()).hexdigest()[:8]}"
    vllm = nightly if version == "nightly" else version.lstrip("v").split("-")[0]
    env = EnvFacts(vllm=vllm, torch="2.9.0+cu128" if _vi(version) >= 7 else "2.8.0+cu128", transformers="4.57.1",
                   python="3.12.3", platform="Linux-x86_64", device="NVIDIA H100 80GB HBM3",
                   hostname=f"gpu-node-{int(roll * 1000) % 4}")
    if hostile:
        env.device = _text("NVIDIA H100", True, int(roll * 100))
    build = round(8 + 30 * roll + (20 if moe else 0), 3)
    probes = [ProbeResult(name="load", passed=True, detail=f"engine built in {build:.1f}s",
                          metrics={"engine_build_s": build})]
    tokens = 48
    gen_s = round(0.2 + roll, 3)
    probes.append(ProbeResult(name="generate", passed=True, detail=f"3 prompts, {tokens} tokens, repeatable",
                              metrics={"generate_s": gen_s, "tokens": tokens,
                                       "tokens_per_s": round(tokens / gen_s, 1)}))
    if cell.lora_source:
        probes.append(ProbeResult(name="lora", passed=True, detail="adapter output differs from base on 3/3 prompts",
                                  metrics={"lora_generate_s": round(gen_s * 1.3, 3), "prompts_differing": 3}))
    error = None
    log_tail = f"INFO engine built in {build:.1f}s\n"
    if status is CellStatus.FAIL and cause in ROOT_CAUSES:
        kind, message, frame, function = ROOT_CAUSES[cause]
        if hostile:
            message = _text(message, True, index)
            frame = _text(frame, True, 3)
        probe = "lora" if cause == "nightly-sampler" else None
        error = ErrorInfo(type=kind, message=message, frame=frame, normalized_message=message,
                          signature=hashlib.sha256(f"{kind}:{cause}".encode()).hexdigest()[:10],
                          traceback_tail=_traceback(kind, message, frame, function), probe=probe)
        probes = probes[:0] if probe is None else probes[:2]
        probes.append(ProbeResult(name=probe or "load", passed=False, detail=kind))
        log_tail += f"ERROR {kind}: {message}\n"
    elif status is CellStatus.FAIL:  # a probe verdict, no exception: the adapter changes nothing
        probes[-1] = ProbeResult(name=probes[-1].name, passed=False, metrics={"prompts_differing": 0},
                                 detail=_text("adapter output equals base output on 3/3 prompts", hostile, 5))
    elif status is CellStatus.CRASH:
        probes = []
        error = ErrorInfo(type="crash", message="The actor died unexpectedly before finishing this task.")
        log_tail += ("Fatal Python error: Segmentation fault\n\nThread 0x00007f3a (most recent call first):\n"
                     '  File "vllm/model_executor/layers/fused_moe/fused_moe.py", line 1204 in invoke_kernel\n'
                     '  File "vllm/model_executor/layers/fused_moe/layer.py", line 1630 in forward_impl\n')
    elif status is CellStatus.TIMEOUT:
        probes = []
        error = ErrorInfo(type="timeout", message="no result within 900s; actor killed")
        log_tail += "INFO Capturing CUDA graphs (mixed prefill-decode, PIECEWISE): 37%\n"
    elif status in (CellStatus.INFRA_ERROR, CellStatus.ENV_ERROR):
        probes = []
        kind = "NodeDiedError" if status is CellStatus.INFRA_ERROR else "EngineEnvError"
        message = ("node gpu-node-3 died while the cell ran" if status is CellStatus.INFRA_ERROR
                   else f"pip could not install vllm=={vllm}: no wheel for torch 2.9.0+cu128")
        error = ErrorInfo(type=kind, message=message)
        log_tail += f"ERROR {message}\n"
    elif status is CellStatus.UNSUPPORTED:
        probes = []
    elif status is CellStatus.FLAKY:
        probes[-1] = ProbeResult(name=probes[-1].name, passed=True, detail="passed on attempt 2 of 2",
                                 metrics=probes[-1].metrics)
    return CellResult(
        run_id=run_id, cell_id=cell.id, cell=cell, attempt=2 if status is CellStatus.FLAKY else 1, status=status,
        probes=probes, error=error, env=env if status not in (CellStatus.CRASH, CellStatus.TIMEOUT) else EnvFacts(),
        timings={"engine_build": build, "generate": gen_s, "total": round(build + 3 * gen_s, 3)} if probes else {},
        peak_rss_mb=round(20_000 + 40_000 * roll, 1) if probes else None,
        started_at=started, finished_at=started + timedelta(seconds=build + 5),
        log_tail="" if status is CellStatus.UNSUPPORTED else log_tail,
    )


def _verdict(cell: Cell, night: int, nights: int, roll: float, chronic: float) -> tuple[CellStatus, str | None]:
    """The story the synthetic nights tell: a few root causes, one regression and one fix on the last night.

    ``roll`` changes every night (flaky cells, infra hiccups), ``chronic`` is the cell's own (crashes, hangs).
    """
    version, last = cell.engine.name, night == nights - 1
    v = _vi(version)  # v0.8.5 → 0 … nightly → 9
    moe = any(m in cell.model for m in MOE)
    if roll < 0.004:
        return CellStatus.PENDING, None
    if cell.quantization == "fp8" and v < 1:
        return CellStatus.UNSUPPORTED, None
    if v == 4 and roll < 0.5 and cell.model.startswith("g"):
        return CellStatus.ENV_ERROR, None
    if moe and cell.lora != "none" and "int4" in cell.quantization and 1 <= v < 7:
        return CellStatus.FAIL, "shared-moe-lora"
    if cell.quantization == "awq-int4" and cell.lora == "all" and v < 3:
        return CellStatus.FAIL, "awq-old"
    if cell.quantization == "fp8" and moe and v >= 7:
        return CellStatus.FAIL, "fp8-marlin"
    if version == "nightly" and cell.lora != "none" and last and "qwen" in cell.model:
        return CellStatus.FAIL, "nightly-sampler"  # tonight's regression
    if version == "nightly" and cell.lora == "mlp" and not last and "llama" in cell.model:
        return CellStatus.FAIL, "lora-rank"  # fixed tonight
    if cell.lora == "mlp" and "phi" in cell.model and v < 1:
        return CellStatus.FAIL, None
    if chronic < 0.006:
        return CellStatus.CRASH, None
    if chronic < 0.01:
        return CellStatus.TIMEOUT, None
    if roll < 0.012:
        return CellStatus.FLAKY, None
    if roll < 0.016:
        return CellStatus.INFRA_ERROR, None
    return CellStatus.PASS, None


def _vi(version: str) -> int:
    return VERSIONS.index(version.split("-")[0])


def _roll(cell_id: str, night: int) -> float:
    return int(hashlib.sha256(f"{cell_id}:{night}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def _text(text: str, hostile: bool, i: int) -> str:
    return f"{text}{HOSTILE[i % len(HOSTILE)]}" if hostile else text


def _traceback(kind: str, message: str, frame: str, function: str) -> str:
    path, line = frame.rsplit(":", 1) if ":" in frame else (frame, "1")
    return (
        "Traceback (most recent call last):\n"
        '  File "/opt/farm/farm/cell/execute.py", line 78, in execute_cell\n'
        "    with build_engine(cell, settings.engine_args) as engine:\n"
        '  File "/opt/venv/lib/python3.12/site-packages/vllm/entrypoints/llm.py", line 297, in __init__\n'
        "    self.llm_engine = LLMEngine.from_engine_args(engine_args=engine_args)\n"
        f'  File "/opt/venv/lib/python3.12/site-packages/{path}", line {line}, in {function}\n'
        "    raise\n"
        f"{kind}: {message}"
    )
