"""`farm repro`: a standalone script that reproduces one failing (or passing) cell with vLLM alone.

The script imports only vLLM and the standard library: it is what goes into a vLLM issue. It builds
the cell's engine with exactly the arguments the cell used (the job's and the variant's engine
arguments, the quantization, the LoRA settings), runs the request the cell failed on (a LoRA request
for a cell with an adapter), and prints the failure's type, innermost vLLM frame, normalised message
and signature, computed the way the farm computes them (``farm.cell.signature``). Exit status: 0 no
failure, 3 it failed with the recorded signature, 4 it failed otherwise (1 is Python's own: the script broke).

Its header says how to get the model (the ``farm zoo build --only …`` line, or the checkpoint),
the vLLM release and the platform the farm measured it on.
"""

from __future__ import annotations

import pprint
from typing import Any

from farm.cell.engine import engine_kwargs
from farm.cell.execute import engine_environment
from farm.errors import FarmError
from farm.model.matrix import Matrix, MatrixCell
from farm.model.platforms import platform_of
from farm.model.results import CellResult, CellStatus
from farm.model.sources import zoo_item
from farm.model.verdicts import failure_kind, root_cause
from farm.report.versions import release_order

# The cell's process environment the failure depends on (farm.cell.execute.engine_environment), less the
# farm's own cache folder.
_REPRO_ENVIRONMENT = ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND", "HF_HUB_OFFLINE")


class ReproError(FarmError):
    """No cell in the run matches what `farm repro` was asked for."""


def pick_cell(matrix: Matrix, wanted: str) -> MatrixCell:
    """The cell a root cause, a signature or a cell id names: for a failure, its first cell in the matrix."""
    for field in ("root_cause", "signature", "cell_id"):
        found = [c for c in matrix.cells if getattr(c, field) == wanted]
        if found:
            return found[0]
    causes = ", ".join(r.root_cause for r in matrix.root_causes[:8]) or "none"
    raise ReproError(f"run {matrix.run_id} has no root cause, signature or cell {wanted!r}; its root causes: {causes}")


def make_repro(result: CellResult, job: dict[str, Any]) -> str:
    """The script for ``result``'s cell; ``job`` is the run's job (its engine arguments and prompts)."""
    model_item, lora_item = zoo_item(result.cell.model_source), zoo_item(result.cell.lora_source)
    kwargs = engine_kwargs(result.cell, dict(job.get("engine_args") or {}), "MODEL")
    kwargs.pop("model")
    kwargs.pop("distributed_executor_backend", None)  # the farm's Ray placement; plain vLLM picks its own
    generation = job.get("generation") or {}
    prompts = list(generation.get("prompts") or ["The capital of France is"])[:4]
    error = result.error if result.status is not CellStatus.PASS else None
    env = {k: v for k, v in engine_environment().items() if k in _REPRO_ENVIRONMENT}
    if env.get("VLLM_CPU_OMP_THREADS_BIND") == "nobind" and _before_nobind(result.env.vllm):
        env["VLLM_CPU_OMP_THREADS_BIND"] = "all"  # what the cell said (farm.cell.vllm_compat): its vLLM predates "nobind"
    return _TEMPLATE.format(
        header=_header(result, model_item, lora_item),
        # Python literals (True, None), not JSON.
        env=pprint.pformat(env),
        model=repr(_model_default(result.cell.model_source, model_item)),
        lora=repr(_model_default(result.cell.lora_source, lora_item) if result.cell.lora_source else None),
        engine_args=pprint.pformat(kwargs, sort_dicts=True),
        prompts=pprint.pformat(prompts),
        max_tokens=int(generation.get("max_tokens") or 16),
        expected=repr(error.signature if error else None),
    )


def _before_nobind(version: str | None) -> bool:
    """Whether a vLLM release predates ``VLLM_CPU_OMP_THREADS_BIND=nobind`` (0.11.1), which it would crash on."""
    return bool(version) and release_order(version or "")[0] < (0, 11, 1)


def _model_default(source: str | None, item: str | None) -> str | None:
    if item is not None:
        return f"~/.cache/farm/zoo/{item}"
    return source


def _header(result: CellResult, model_item: str | None, lora_item: str | None) -> str:
    env = result.env
    items = [i for i in (model_item, lora_item) if i]
    lines = [
        f"Reproduces farm cell {result.cell_id} ({result.cell.label}) of run {result.run_id}.",
        f"Measured on vLLM {env.vllm} ({env.vllm_dist or 'vllm'}{', commit ' + env.vllm_commit if env.vllm_commit else ''}), "
        f"torch {env.torch}, transformers {env.transformers}, Python {env.python}; platform: {_platform_text(env)}.",
    ]
    if result.status is not CellStatus.PASS and result.error:
        kind = failure_kind(result.status, result.error)
        lines += [f"Outcome there: {result.status.value} ({kind.value if kind else 'no kind'}), root cause "
                  f"{root_cause(result.error)}, signature {result.error.signature}:",
                  f"    {result.error.type} at {result.error.frame or '?'}: {result.error.message.splitlines()[0][:300]}"]
    else:
        lines.append(f"Outcome there: {result.status.value}.")
    if items:
        lines += ["The model: the farm's zoo generates it locally (no hub), same bytes on every machine:",
                  f"    pip install 'farm @ git+…' && farm zoo build --only {' '.join(items)}",
                  "writes it under ~/.cache/farm/zoo (or $FARM_ZOO_DIR); or set FARM_REPRO_MODEL / FARM_REPRO_LORA."]
    else:
        lines.append(f"The model: {result.cell.model_source} (FARM_REPRO_MODEL overrides it).")
    lines.append("Run: python repro.py    exit 0: no failure; 3: failed with the signature above; 4: failed otherwise.")
    return "\n".join(lines)


_TEMPLATE = '''#!/usr/bin/env python3
"""{header}
"""
import hashlib
import os
import re
import sys
import traceback

# The environment the farm's cell ran in (set before vLLM is imported).
for _name, _value in {env}.items():
    os.environ.setdefault(_name, _value)

MODEL = os.path.expanduser(os.environ.get("FARM_REPRO_MODEL", {model}))
LORA = os.environ.get("FARM_REPRO_LORA", {lora})
LORA = os.path.expanduser(LORA) if LORA else None
ENGINE_ARGS = {engine_args}
PROMPTS = {prompts}
MAX_TOKENS = {max_tokens}
EXPECTED_SIGNATURE = {expected}

# The farm's failure signature (farm/cell/signature.py): type, normalised message, innermost vLLM file and function.
_NORMALISERS = [
    (r"0x[0-9a-fA-F]+", "<addr>"),
    (r"(?:/[\\w.@+-]+)+/?", "<path>"),
    (r"\\b[0-9a-f]{{8,}}\\b", "<id>"),
    (r"\\b\\d+(?:\\.\\d+)?(?:e[-+]?\\d+)?\\b", "<n>"),
    (r"\\s+", " "),
]


def headline(message):
    lines = [line for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    header = re.match(r"^\\d+ validation errors? for (\\w+)$", lines[0].strip())
    if header and len(lines) > 1:
        detail = re.match(r"^\\s*(?:Value error, |Assertion failed, )?(.*?)\\s*(?:\\[type=.*)?$", lines[1])
        return header.group(1) + ": " + (detail.group(1) if detail else lines[1].strip())
    return lines[0]


def signature(exc):
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = headline(str(exc))
    for pattern, replacement in _NORMALISERS:
        text = re.sub(pattern, replacement, text)
    frame, function = None, ""
    for entry in traceback.extract_tb(exc.__traceback__):
        parts = entry.filename.replace("\\\\", "/").split("/")
        for index in range(len(parts) - 2, -1, -1):
            if parts[index] == "vllm":
                frame, function = "/".join(parts[index:]) + ":" + str(entry.lineno), entry.name
                break
    key = "|".join([type(exc).__name__, text[:300], frame.rsplit(":", 1)[0] if frame else "", function])
    return type(exc).__name__, frame, text[:300], hashlib.sha256(key.encode()).hexdigest()[:10]


def main():
    from vllm import LLM, SamplingParams

    try:
        llm = LLM(model=MODEL, **ENGINE_ARGS)
        request = None
        if LORA:
            from vllm.lora.request import LoRARequest

            request = LoRARequest("adapter", 1, LORA)
        params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True)
        outputs = llm.generate(PROMPTS, params, lora_request=request, use_tqdm=False)
    except Exception as exc:
        traceback.print_exc()
        kind, frame, message, hit = signature(exc)
        print(f"FAILED: {{kind}} at {{frame}}: {{message}}")
        print(f"signature {{hit}}" + (" (the one the farm recorded)" if hit == EXPECTED_SIGNATURE
                                     else f" (the farm recorded {{EXPECTED_SIGNATURE}})"))
        return 3 if hit == EXPECTED_SIGNATURE else 4
    for prompt, output in zip(PROMPTS, outputs):
        print(repr(prompt), "->", repr(output.outputs[0].text))
    print("PASSED: no failure" + (f" (the farm recorded signature {{EXPECTED_SIGNATURE}})" if EXPECTED_SIGNATURE else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''


def _platform_text(facts: Any) -> str:
    """The platform as the matrix names it (farm.model.platforms), with the CUDA build or the CPU model."""
    if facts is None:
        return "unknown"
    label = platform_of(facts) or "unknown"
    detail = f"CUDA {facts.cuda}" if facts.cuda else facts.cpu
    return f"{label} ({detail})" if detail else label