"""LoRA on routed experts (and on the MLPs beside them), in the classic per-expert layout.

vLLM 0.32 loads MoE LoRA for Qwen2-MoE, Mixtral and DeepSeek-V3 (models whose
experts are per-expert linears on disk, ``is_3d_moe_weight`` false) from the
classic layout: one ``lora_A``/``lora_B`` pair per expert and projection, named
as the checkpoint names the expert's linear (``vllm/lora/utils.py``,
``process_packed_modules_mapping`` expands the packed ``experts`` module to
these names)::

    base_model.model.model.layers.<i>.<disk_prefix>.<e>.<gate|up|down>.lora_A.weight  [r, in]
    base_model.model.model.layers.<i>.<disk_prefix>.<e>.<gate|up|down>.lora_B.weight  [out, r]

The 3-D PEFT layout (``target_parameters``) it reads only with
``enable_mixed_moe_lora_format``.

PEFT cannot train this layout on transformers 5: the experts of a layer are
stacked (``gate_up_proj [E, 2I, H]``, ``down_proj [E, H, I]``), and for the
Qwen2-MoE family (DeepSeek-V3 included) PEFT rewrites the target names
``gate_proj``/``up_proj``/``down_proj`` to those stacked parameters, so a shared
expert's or a dense layer's ``gate_proj`` cannot be targeted by name either. So
the zoo trains these deltas itself, as parametrizations of the weights, and
writes them under the names above; PEFT trains only the attention.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, cast

from farm.errors import ZooError
from farm.zoo.registry import ArchSpec, stacked_experts

if TYPE_CHECKING:
    import torch
    from torch import nn

# transformers' stacked parameters: (name, parts along the output dim, index of
# each part's projection in Experts.projections).
_STACKED = (("gate_up_proj", (0, 1)), ("down_proj", (2,)))
_PEFT_PREFIX = "base_model.model."


def _lora_delta_cls() -> type[nn.Module]:
    import torch
    from torch import nn

    class LoRADelta(nn.Module):
        """``W + scaling * B @ A`` for a weight ``[out, in]`` or stacked experts ``[E, out, in]``.

        ``parts`` projections may be stacked along ``out`` (``gate_up_proj``:
        the gate's rows, then the up projection's), each with its own pair.
        Initialised as PEFT's ``init_lora_weights=False`` does (both factors
        uniform in +-1/sqrt(fan_in)), so the delta is non-zero from the start.
        """

        def __init__(self, weight: torch.Tensor, parts: int, r: int, scaling: float) -> None:
            super().__init__()
            *lead, out_features, in_features = weight.shape
            experts = lead[0] if lead else 1
            self.scaling = scaling
            bound_a, bound_b = 1 / math.sqrt(in_features), 1 / math.sqrt(r)
            # Not named lora_*: PEFT saves every parameter whose name has "lora_".
            self.factor_a = nn.Parameter(torch.empty(parts, experts, r, in_features).uniform_(-bound_a, bound_a))
            self.factor_b = nn.Parameter(
                torch.empty(parts, experts, out_features // parts, r).uniform_(-bound_b, bound_b)
            )

        def forward(self, weight: torch.Tensor) -> torch.Tensor:
            delta = torch.matmul(self.factor_b, self.factor_a)  # [parts, E, out/parts, in]
            return weight + self.scaling * delta.transpose(0, 1).reshape(weight.shape)

    return LoRADelta


class ManualLoRA:
    """LoRA factors attached to a transformers model as parametrizations.

    Args:
        model: the model (PEFT-wrapped or not); its weights get the deltas.
        arch: the architecture (``experts`` says where the routed experts are).
        r: rank.
        alpha: LoRA alpha (scaling ``alpha / r``, as PEFT and vLLM apply it).
        linear_targets: leaf names of ``nn.Linear`` modules to adapt as well
            (shared experts, dense MLPs), under their own names.

    Call it after ``peft.get_peft_model`` (which freezes what exists when it
    runs) and under the build's seed: the factors draw from torch's global RNG.
    """

    def __init__(self, model: nn.Module, arch: ArchSpec, r: int, alpha: float, linear_targets: tuple[str, ...]):
        from torch import nn

        delta_cls = _lora_delta_cls()
        # (owning module, parameter name, factors A and B, on-disk module names per part and expert)
        self._entries: list[tuple[nn.Module, str, nn.Parameter, nn.Parameter, list[list[str]]]] = []
        spec = arch.experts
        moe_layers = 0
        for name, module in list(model.named_modules()):
            disk = name.removeprefix(_PEFT_PREFIX)
            layer = _moe_layer(disk, arch)
            if layer is not None and spec is not None:
                moe_layers += 1
                for param, parts in _STACKED:
                    weight = getattr(module, param)
                    names = [
                        [f"model.layers.{layer}.{spec.disk_prefix}.{e}.{spec.projections[p]}"
                         for e in range(weight.shape[0])]
                        for p in parts
                    ]
                    self._add(module, param, delta_cls(weight, len(parts), r, alpha / r), names)
            elif isinstance(module, nn.Linear) and disk.rsplit(".", 1)[-1] in linear_targets:
                self._add(module, "weight", delta_cls(module.weight, 1, r, alpha / r), [[disk]])
        if spec is not None and moe_layers == 0:
            raise ZooError(f"found no stacked experts at {spec.module!r} in {arch.name}; check its Experts spec.")

    def _add(self, module: nn.Module, param: str, delta: nn.Module, names: list[list[str]]) -> None:
        from torch.nn.utils import parametrize

        parametrize.register_parametrization(module, param, delta)
        factors = cast("nn.Parameter", delta.factor_a), cast("nn.Parameter", delta.factor_b)
        self._entries.append((module, param, *factors, names))

    def parameters(self) -> list[nn.Parameter]:
        """The trainable factors."""
        return [p for _, _, a, b, _ in self._entries for p in (a, b)]

    def remove(self) -> dict[str, torch.Tensor]:
        """Take the deltas off the model; return them as PEFT adapter tensors (per-expert layout)."""
        from torch.nn.utils import parametrize

        out: dict[str, torch.Tensor] = {}
        for module, param, factor_a, factor_b, names in self._entries:
            a, b = factor_a.detach(), factor_b.detach()
            for part, part_names in enumerate(names):
                for e, disk in enumerate(part_names):
                    out[f"{_PEFT_PREFIX}{disk}.lora_A.weight"] = a[part, e].contiguous().clone()
                    out[f"{_PEFT_PREFIX}{disk}.lora_B.weight"] = b[part, e].contiguous().clone()
            parametrize.remove_parametrizations(module, param, leave_parametrized=False)
        self._entries.clear()
        return out


def _moe_layer(disk_name: str, arch: ArchSpec) -> int | None:
    """The layer index if ``disk_name`` is a transformers stacked-experts module of ``arch``."""
    if arch.experts is None:
        return None
    match = re.fullmatch(rf"model\.layers\.(\d+)\.{re.escape(arch.experts.module)}", disk_name)
    return int(match.group(1)) if match else None


def merge_adapter(model: nn.Module, arch: ArchSpec, adapter_dir: Path) -> int:
    """Add every delta of a zoo adapter into ``model``'s weights, in place.

    What an engine serving the adapter should compute, without PEFT: on
    transformers 5, PEFT maps a classic adapter's per-expert keys onto the
    stacked experts but does not load the deltas of modules that share their
    leaf names (a shared expert's ``gate_proj``). Scaling is ``lora_alpha / r``.

    Args:
        model: a transformers model of ``arch`` (not PEFT-wrapped).
        arch: its architecture.
        adapter_dir: a PEFT adapter directory in the per-expert layout (for stacked experts, PEFT's
            ``target_parameters`` layout, merged by PEFT itself).

    Returns:
        How many deltas (one per module, expert and projection) were merged.

    Raises:
        ZooError: the adapter names a module the model does not have.
    """
    import torch
    from safetensors.torch import load_file

    from farm.zoo.checkpoint import ADAPTER_WEIGHTS_FILE

    if stacked_experts(arch):
        return _merge_with_peft(model, adapter_dir)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    scaling = config["lora_alpha"] / config["r"]
    tensors = load_file(adapter_dir / ADAPTER_WEIGHTS_FILE)
    params = dict(model.named_parameters())
    stacked = _stacked_index(model, arch)
    merged = 0
    with torch.no_grad():
        for key in sorted(tensors):
            if not key.endswith(".lora_A.weight"):
                continue
            disk = key.removeprefix(_PEFT_PREFIX).removesuffix(".lora_A.weight")
            delta = scaling * (tensors[key.replace(".lora_A.", ".lora_B.")].float() @ tensors[key].float())
            if disk in stacked:
                param, expert, rows = stacked[disk]
                target = param[expert, rows]
            elif disk + ".weight" in params:
                target = params[disk + ".weight"]
            else:
                raise ZooError(f"{adapter_dir.name}: {disk} is not a module of {arch.name}.")
            target += delta.to(device=target.device, dtype=target.dtype)  # the model may be on a GPU, the file is not
            merged += 1
    return merged


def _merge_with_peft(model: nn.Module, adapter_dir: Path) -> int:
    """PEFT's own merge, for experts stacked on disk: their ``target_parameters`` adapters PEFT loads whole."""
    from peft import PeftModel
    from safetensors import safe_open

    from farm.zoo.checkpoint import ADAPTER_WEIGHTS_FILE

    with safe_open(str(adapter_dir / ADAPTER_WEIGHTS_FILE), "pt") as f:
        merged = sum(1 for key in f.keys() if key.endswith(".lora_A.weight"))  # noqa: SIM118 (safe_open has no __iter__)
    # Wraps ``model``'s own modules; merging writes the deltas into its weights and puts the modules back.
    PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    return merged


def _stacked_index(model: nn.Module, arch: ArchSpec) -> dict[str, tuple[torch.Tensor, int, slice]]:
    """On-disk per-expert module name -> (stacked parameter, expert, its rows)."""
    spec = arch.experts
    out: dict[str, tuple[torch.Tensor, int, slice]] = {}
    if spec is None:
        return out
    for name, module in model.named_modules():
        layer = _moe_layer(name, arch)
        if layer is None:
            continue
        for param, parts in _STACKED:
            weight = getattr(module, param)
            rows = weight.shape[1] // len(parts)
            for i, p in enumerate(parts):
                for e in range(weight.shape[0]):
                    disk = f"model.layers.{layer}.{spec.disk_prefix}.{e}.{spec.projections[p]}"
                    out[disk] = (weight, e, slice(i * rows, (i + 1) * rows))
    return out
