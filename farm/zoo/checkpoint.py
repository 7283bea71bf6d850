"""Reading and writing the files of a Hugging Face model directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

WEIGHTS_FILE = "model.safetensors"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"


def copy_model_files(base_dir: Path, out_dir: Path) -> None:
    """Copy config, generation config and tokenizer; not the weights or the zoo manifest."""
    for f in sorted(base_dir.iterdir()):
        if f.is_file() and f.name != WEIGHTS_FILE and not f.name.startswith("farm-"):
            shutil.copy2(f, out_dir / f.name)


def write_config(model_dir: Path, quant: dict[str, Any] | None, dtype: str | None = None) -> None:
    """Set (with None: drop) ``quantization_config``, and ``dtype`` if given, in config.json."""
    path = model_dir / "config.json"
    config = json.loads(path.read_text())
    config.pop("quantization_config", None)
    if quant is not None:
        config["quantization_config"] = quant
    if dtype is not None:
        config["dtype"] = dtype
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    hub_compatible(model_dir)


# What a tokenizer saved by transformers 5 names that transformers 4 does not know, and what real hub checkpoints say.
PORTABLE_TOKENIZER_CLASS = "PreTrainedTokenizerFast"


def hub_compatible(model_dir: Path) -> None:
    """Write config and tokenizer files the way hub checkpoints carry them, readable by transformers 4.5x and 5.x.

    transformers 5 saves ``tokenizer_class: TokenizersBackend`` (a class 4.x lacks: vLLM releases that pin
    ``transformers<5`` fail with "Tokenizer class TokenizersBackend does not exist"), rope settings only under
    ``rope_parameters``, extra special tokens as a list under ``extra_special_tokens``, and ``dtype`` only. A real
    checkpoint has ``PreTrainedTokenizerFast`` (which 5.x reads as well), ``additional_special_tokens``, a
    top-level ``rope_theta`` (and ``rope_scaling``) and ``torch_dtype``: written here beside the 5.x keys.
    """
    tokenizer_config = model_dir / "tokenizer_config.json"
    if tokenizer_config.exists():
        settings = json.loads(tokenizer_config.read_text())
        if settings.get("tokenizer_class") == "TokenizersBackend":
            settings["tokenizer_class"] = PORTABLE_TOKENIZER_CLASS
        settings.pop("backend", None)  # a transformers 5 field
        # transformers 5's list of extra special tokens is 4.x's additional_special_tokens (4.57 wants a dict
        # under the 5.x name: "'list' object has no attribute 'keys'"); both read the 4.x name.
        extra = settings.pop("extra_special_tokens", None)
        if extra:
            settings["additional_special_tokens"] = extra
        tokenizer_config.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    path = model_dir / "config.json"
    config = json.loads(path.read_text())
    rope = config.get("rope_parameters") or {}
    if "rope_theta" in rope:
        config.setdefault("rope_theta", rope["rope_theta"])
        if rope.get("rope_type", "default") == "default":
            config.setdefault("rope_scaling", None)
        else:  # gpt-oss's YaRN: transformers 4.x and the vLLM releases of its day read rope_scaling
            config.setdefault("rope_scaling", {k: v for k, v in rope.items() if k != "rope_theta"})
    if "dtype" in config:
        config["torch_dtype"] = config["dtype"]
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
