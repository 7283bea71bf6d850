"""Which third-party modules vLLM imports on the farm's paths: the check behind ``LEFT_OUT``.

A bundle leaves out packages that vLLM lists as requirements but does not import where the
farm goes (the offline ``LLM`` engine, its EngineCore and GPU worker, the zoo's model
architectures, their quantization and LoRA layers, the attention backends of CUDA GPUs).
Leaving one out is safe only if no module on those paths imports it unguarded when it is
imported. This reads vLLM's source (never imports it: the bundle is made on a machine
without the target's torch or GPU) and follows every import that runs at import time:
module level, class bodies, ``if`` and ``try`` blocks, but not function bodies (lazy
imports) nor ``if TYPE_CHECKING:``. An import in a ``try`` whose ``except`` catches
ImportError (or Exception) is *guarded*: vLLM carries on without the module. A package the
bundle ships that vLLM imports unguarded is walked the same way: its own imports run too
(fastapi 0.165 imports opentelemetry at import time, which bundles of vllm 0.20.0 and 0.22.1
left out: every cell of theirs failed at ``from vllm import LLM`` on an H100).

What it cannot see: a lazy import inside a function that the farm's path calls. Those are
listed too (``lazy``), so a person can judge them; the GPU run is the final proof.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

# The modules vLLM loads for a farm cell on a CUDA GPU: the offline engine and what it
# imports by name at run time (the executor, worker, platform, model and attention classes
# are resolved from strings, so a static walk from `vllm` alone would not reach them).
FARM_ENTRY_MODULES: tuple[str, ...] = (
    "vllm",
    "vllm.entrypoints.llm",
    "vllm.lora.request",
    "vllm.sampling_params",
    "vllm.platforms.cuda",
    "vllm.v1.engine.core",
    "vllm.v1.engine.core_client",
    "vllm.v1.engine.llm_engine",
    "vllm.v1.executor.uniproc_executor",
    "vllm.v1.executor.multiproc_executor",
    "vllm.v1.worker.gpu_worker",
    "vllm.v1.worker.gpu_model_runner",
    "vllm.v1.sample.sampler",
    "vllm.v1.attention.backends.flash_attn",
    "vllm.v1.attention.backends.triton_attn",
    "vllm.v1.attention.backends.mla.flashmla",
    "vllm.v1.attention.backends.mla.triton_mla",
    "vllm.v1.attention.backends.mla.flashattn_mla",
    "vllm.model_executor.models.qwen2",
    "vllm.model_executor.models.qwen2_moe",
    "vllm.model_executor.models.llama",
    "vllm.model_executor.models.mixtral",
    "vllm.model_executor.models.deepseek_v2",
    "vllm.model_executor.layers.quantization.gptq",
    "vllm.model_executor.layers.quantization.gptq_marlin",
    "vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors",
    "vllm.model_executor.layers.fused_moe",
    "vllm.lora.layers",
    "vllm.lora.model_manager",
    "vllm.lora.punica_wrapper.punica_gpu",
    "vllm.lora.worker_manager",
)

# Functions on the farm's path whose lazy imports therefore run: vLLM resolves a checkpoint's quantization
# method through get_quantization_config, which imports every method's module in its body (vllm 0.22.1's
# humming.py then imports humming at module level on CUDA: seen failing an FP8 cell on an H100).
FARM_CALLED_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "vllm.model_executor.layers.quantization": ("get_quantization_config",),
}

_GUARDS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}
# Platform checks that hold on the bundles' targets (CUDA GPUs): what they guard runs there.
_CUDA_CHECKS = {"is_cuda", "is_cuda_alike"}


def within(module: str, modules: Iterable[str]) -> bool:
    """Whether ``module`` is one of ``modules`` or a submodule of one (``opentelemetry.context`` is within
    ``opentelemetry``, not within ``opentelemetry.sdk``)."""
    return any(module == m or module.startswith(m + ".") for m in modules)


@dataclass(frozen=True)
class ImportSite:
    module: str  # the third-party module imported, e.g. "flashinfer.sampling"
    importer: str  # the vLLM module that imports it
    line: int
    guarded: bool

    def within(self, modules: Iterable[str]) -> bool:
        return within(self.module, modules)

    def where(self) -> str:
        return f"{self.importer.replace('.', '/')}.py:{self.line}"


@dataclass
class Reach:
    """What importing the entry modules imports: vLLM modules visited, third-party import sites."""

    visited: set[str] = field(default_factory=set)  # vLLM's modules and the shipped packages' it imports
    via: dict[str, str] = field(default_factory=dict)  # a module reached → the first module seen importing it
    eager: list[ImportSite] = field(default_factory=list)  # run at import time
    lazy: list[ImportSite] = field(default_factory=list)  # inside functions of visited modules
    missing_entries: list[str] = field(default_factory=list)  # entry modules this vLLM does not have

    def chain(self, module: str) -> list[str]:
        """How ``module`` was reached from an entry module: ``importer:line`` steps, innermost first."""
        out, seen = [], set()
        while self.via.get(module) and module not in seen:
            seen.add(module)
            step = self.via[module]
            out.append(step)
            module = step.split(":")[0]
        return out

    def unguarded(self, modules: Iterable[str]) -> list[ImportSite]:
        """The import sites of ``modules`` (or their submodules) that run at import time, unguarded."""
        wanted = tuple(modules)
        return [s for s in self.eager if s.within(wanted) and not s.guarded]

    def lazily(self, modules: Iterable[str]) -> list[ImportSite]:
        wanted = tuple(modules)
        return [s for s in self.lazy if s.within(wanted)]


def reach(site: Path, entries: Iterable[str] = FARM_ENTRY_MODULES, package: str = "vllm", *,
          conditional: bool = False, called: dict[str, tuple[str, ...]] = FARM_CALLED_FUNCTIONS) -> Reach:
    """Follow import-time imports from ``entries`` through ``package``'s source under ``site``, and through every
    other package under ``site`` that one of them imports unguarded.

    ``conditional=False`` follows only imports that always run (not those under a module-level
    ``if``, such as ``if has_deep_ep():``; an ``if current_platform.is_cuda():`` does run on the
    bundle's GPU): what it finds is certainly imported. ``True`` also follows those: what it finds
    may be. The bodies of ``called`` functions (module → names) count as run.
    """
    result = Reach()
    queue = []
    for entry in dict.fromkeys([*entries, *called]):  # a called function's module is imported to call it
        if _source(site, entry) is None:
            result.missing_entries.append(entry)
        else:
            queue.append(entry)
            result.via[entry] = ""  # an entry module: the chain ends here
    while queue:
        name = queue.pop()
        if name in result.visited:
            continue
        result.visited.add(name)
        parent = name.rpartition(".")[0]
        if parent and parent not in result.visited:
            queue.append(parent)  # importing a.b.c runs a/__init__ and a/b/__init__ first
        path = _source(site, name)
        if path is None:
            continue
        try:
            tree = ast.parse(path.read_text(errors="replace"))
        except SyntaxError:
            continue
        is_package = path.name == "__init__.py"
        run_bodies = [fn.body for fn in tree.body if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
                      and fn.name in called.get(name, ())]
        statements = chain(_imports(tree.body, eager=True, guarded=False, under_if=False),
                           *(_imports(body, eager=True, guarded=False, under_if=False) for body in run_bodies))
        for node, eager, guarded, under_if in statements:
            if under_if and not conditional:
                continue
            for target in _targets(node, name, is_package):
                if target.split(".")[0] == package:
                    if eager:
                        for found in _candidates(site, target):
                            result.via.setdefault(found, f"{name}:{node.lineno}")
                            queue.append(found)
                    continue
                site_of = ImportSite(target, name, node.lineno, guarded)
                (result.eager if eager else result.lazy).append(site_of)
                if eager and not guarded:
                    # A package the bundle ships runs its own imports when vLLM imports it (fastapi 0.165's
                    # telemetry imports opentelemetry, which vllm 0.20.0/0.22.1's bundles had left out).
                    for found in _candidates(site, target):
                        result.via.setdefault(found, f"{name}:{node.lineno}")
                        queue.append(found)
        result.eager.extend(ImportSite(target, name, line, False) for target, line in _lazy_loads_at_import(tree))
    return result


def _lazy_loads_at_import(tree: ast.Module) -> list[tuple[str, int]]:
    """Modules behind vLLM's ``LazyLoader`` that are loaded anyway when the module is imported.

    ``xgr = LazyLoader("xgr", globals(), "xgrammar")`` defers the import until an attribute is
    read, but an annotation such as ``matcher: xgr.GrammarMatcher`` in a class body (a dataclass
    field) is evaluated when the class is defined, unless the module has ``from __future__ import
    annotations``. Seen on an H100: vllm 0.26.0's structured-output backends load llguidance and
    xgrammar this way as soon as ``vllm.v1.request`` is imported.
    """
    if any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and any(a.name == "annotations" for a in n.names)
           for n in tree.body):
        return []
    loaders: dict[str, str] = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Call) and getattr(node.value.func, "id", None) == "LazyLoader"
                and len(node.value.args) == 3 and isinstance(node.value.args[2], ast.Constant)):
            loaders[node.targets[0].id] = str(node.value.args[2].value)
    found: list[tuple[str, int]] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.AnnAssign):
                for name in ast.walk(node.annotation):
                    if isinstance(name, ast.Name) and name.id in loaders:
                        found.append((loaders[name.id], node.lineno))
            elif isinstance(node, ast.ClassDef):
                visit(node.body)

    if loaders:
        visit(tree.body)
    return found


def _source(site: Path, module: str) -> Path | None:
    base = site.joinpath(*module.split("."))
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def _candidates(site: Path, target: str) -> list[str]:
    """``from a.b import c`` may import the submodule a.b.c; keep what exists."""
    return [target] if _source(site, target) else []


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        parts = module.split(".")
        keep = len(parts) - node.level + (1 if is_package else 0)
        base = ".".join(parts[:keep] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    return [base, *(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")]


def _imports(body: list[ast.stmt], *, eager: bool, guarded: bool, under_if: bool):  # type: ignore[no-untyped-def]
    """Yield (import node, runs at import time, guarded, under an ``if``) for the statements in ``body``."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, eager, guarded, under_if
        elif isinstance(node, ast.If):
            if _is_type_checking(node.test):
                yield from _imports(node.orelse, eager=eager, guarded=guarded, under_if=under_if)
                continue
            if _is_cuda_check(node.test):
                yield from _imports(node.body, eager=eager, guarded=guarded, under_if=under_if)
                yield from _imports(node.orelse, eager=eager, guarded=guarded, under_if=True)
                continue
            yield from _imports(node.body + node.orelse, eager=eager, guarded=guarded, under_if=True)
        elif isinstance(node, ast.Try):
            catches = any(_catches_import_error(h) for h in node.handlers)
            yield from _imports(node.body, eager=eager, guarded=guarded or catches, under_if=under_if)
            for handler in node.handlers:
                yield from _imports(handler.body, eager=eager, guarded=guarded, under_if=True)
            yield from _imports(node.orelse + node.finalbody, eager=eager, guarded=guarded, under_if=under_if)
        elif isinstance(node, ast.With | ast.For | ast.While | ast.ClassDef):
            yield from _imports(node.body, eager=eager, guarded=guarded, under_if=under_if)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _imports(node.body, eager=False, guarded=guarded, under_if=under_if)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _is_cuda_check(test: ast.expr) -> bool:
    """``current_platform.is_cuda()`` and the like."""
    return (isinstance(test, ast.Call) and isinstance(test.func, ast.Attribute) and test.func.attr in _CUDA_CHECKS
            and not test.args)


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(n, ast.Name) and n.id in _GUARDS or isinstance(n, ast.Attribute) and n.attr in _GUARDS
               for n in names)
