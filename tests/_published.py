"""Read a published dataset folder as its users do: `datasets.load_dataset(folder)` and every
config by name, in a fresh process with HF_HUB_OFFLINE=1 (`datasets` reads it once, at import)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import json, sys
from datasets import get_dataset_config_names, load_dataset

folder, forbidden = sys.argv[1], json.loads(sys.argv[2])
out = {"default": {s: d.num_rows for s, d in load_dataset(folder).items()}, "configs": {}, "leaks": []}
for name in get_dataset_config_names(folder):
    ds = load_dataset(folder, name)
    out["configs"][name] = {s: {"rows": d.num_rows, "columns": d.column_names} for s, d in ds.items()}
    for split, d in ds.items():
        for i, row in enumerate(d):
            text = json.dumps(row, default=str)
            out["leaks"] += [f"{name}/{split} row {i}: {w}" for w in forbidden if w in text]
print(json.dumps(out))
"""


def load_published(folder: Path, forbidden: list[str], tmp: Path) -> dict:
    """{"default": {split: rows}, "configs": {config: {split: {rows, columns}}}, "leaks": [...]}:
    `leaks` names every row holding one of the `forbidden` strings (local paths)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp / "hf")}
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(folder), json.dumps(forbidden)], capture_output=True,
                       text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.splitlines()[-1])


def text_leaks(folder: Path, forbidden: list[str]) -> list[str]:
    """Text files of the folder (the card, the JSON originals) that hold a forbidden string."""
    return [f"{p.relative_to(folder)}: {w}" for p in sorted(folder.rglob("*"))
            if p.is_file() and p.suffix != ".parquet" for w in forbidden if w in p.read_text(errors="replace")]
