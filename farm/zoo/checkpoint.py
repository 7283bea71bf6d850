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
