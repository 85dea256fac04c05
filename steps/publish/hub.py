"""publish.hub: publish Datasets and files as a Hugging Face dataset repository (or a local folder).

    - id: publish
      uses: publish.hub
      with: {target: hub, repo_id: me/openmath-hard, private: true}
      inputs: {train: ["${steps.hard.data}", "${steps.generated.data}"], test: "${steps.heldout.data}"}

It builds one folder, the same for `target: local` and `target: hub`:

    data/<split>_<file>.parquet    one parquet per source file, split name as prefix
    <split>/<file>.json[l]         the original JSON/JSONL files, kept as they were
    README.md                      dataset card: YAML `configs`, columns per config, the run record

Configs and splits as `datasets` and the Hub read them: the `train`, `validation` and `test`
inputs are the splits of one config, `default` (`load_dataset(folder)` returns all of them; they
must share columns); each name in `split_names` or `files` other than those three is a config
of its own with one split, `train` (`load_dataset(folder, "errors")`).

Nothing local is published: models in the run record are named by Hub id, folder name or step
output, and any absolute path in it is cut to its last component.

`target: local` stops there (the folder is the step's `folder` output, under
artifacts/<recipe>/<step>/folder; `local_dir`, an absolute path, also gets a copy when it runs).
`target: hub` then creates the dataset repo (`private`) and uploads, in one commit, only the
files whose content is not already in the repo. The token comes from `ctx.secret(token_env)`
(environment or keys file) and never appears in a record, log or error.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from engine.cache.secrets import scrub, scrub_pieces
from engine.recipe.artifact_types import Dataset, Files, Report
from engine.recipe.errors import StepError
from engine.recipe.step import EXECUTION_ONLY, In, Step, StepConfig, register

SPLIT_SLOTS = ("train", "validation", "test")
SECRETISH = re.compile(r"(token|secret|password|api_key|apikey|credential)", re.I)


# the Hub's own rules for a user or repo name (huggingface_hub's validate_repo_id): 1-96 ASCII letters,
# digits, '_', '-', '.', a letter, digit or '_' at each end; checked here, before any work, not at upload
HUB_NAME = re.compile(r"(?a)\w(?:[\w.-]{0,94}\w)?")
MAX_ERROR_CHARS = 300  # of a Hub answer quoted in an error (an HTML error page runs to kilobytes)


def make_hf_api(token: str | None, timeout_s: float):
    """The Hub boundary: tests replace this with a fake HfApi. huggingface_hub's shared client
    waits forever for an answer (timeout=None); this process's client waits `timeout_s`."""
    from huggingface_hub import HfApi

    try:  # huggingface_hub >= 1.0 (httpx); before it, requests' session had no such hook
        from huggingface_hub import set_client_factory
        from huggingface_hub.utils._http import default_client_factory
    except ImportError:
        return HfApi(token=token)

    def bounded():
        client = default_client_factory()
        client.timeout = timeout_s
        return client

    set_client_factory(bounded)
    return HfApi(token=token)


def repo_id_problem(repo_id: str) -> str | None:
    """Why the Hub would refuse `repo_id` as a dataset repo's user/name; None when it would not."""
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(HUB_NAME.fullmatch(p) for p in parts):
        return ("expected user/name, each 1-96 letters, digits, '_', '-' or '.', starting and ending with a "
                "letter, digit or '_'")
    if "--" in repo_id or ".." in repo_id:
        return "the Hub refuses '--' and '..' in a name"
    if repo_id.endswith(".git"):
        return "the Hub refuses a name ending in .git"
    return None


@register("publish.hub")
class PublishHub(Step):
    """Splits -> data/<split>_<file>.parquet + original JSON + README card; writes a folder or makes one Hub commit."""

    # 2: the card marks a default config, task_categories, language, size_categories
    # 3: train/validation/test are the splits of config `default`; columns per config; no local paths
    version = "3"
    side_effects = True  # a Hub commit, or files under local_dir

    class Config(StepConfig):
        target: Literal["local", "hub"] = "local"
        repo_id: str | None = Field(None, description="user/name of the dataset repo (target: hub)")
        private: bool = True
        revision: str | None = Field(None, description="branch to commit to (default: main)")
        local_dir: str | None = Field(None, description="also copy the folder here (an absolute path; target: local)")
        split_names: list[str] = Field(default_factory=list,
                                       description="names of the datasets bound to `splits`, in order "
                                                   "(e.g. [cot, generated])")
        files: dict[str, list[str]] = Field(default_factory=dict,
                                            description="extra splits from local files: {split: [paths or globs]}")
        card: str | None = Field(None, description="your own card text (markdown); the YAML configs are added")
        card_file: str | None = Field(None,
                                      description="a file holding your card text")
        pretty_name: str | None = None
        license: str | None = None
        tags: list[str] = Field(default_factory=list)
        default_config: str | None = Field(None, description="the config `load_dataset(repo)` loads without naming "
                                                             "one (default: `default`, else the first)")
        task_categories: list[str] = Field(default_factory=lambda: ["text-generation"])
        language: list[str] = Field(default_factory=lambda: ["en"])
        description: str = ""
        run_record: dict[str, Any] = Field(default_factory=dict, description="extra provenance to embed in the card")
        token_env: str = Field("HF_TOKEN", description="name of the variable holding the Hub token",
                               json_schema_extra=EXECUTION_ONLY)
        commit_message: str = "Upload dataset with mathrecipe publish.hub"
        timeout_s: float = Field(300.0, gt=0, json_schema_extra=EXECUTION_ONLY,
                                 description="seconds to wait for the Hub to answer one request")

        @field_validator("files", mode="before")
        @classmethod
        def _lists(cls, v):
            return {k: [x] if isinstance(x, str) else x for k, x in (v or {}).items()}

        @field_validator("repo_id")
        @classmethod
        def _hub_name(cls, v: str | None) -> str | None:
            if v is not None and (why := repo_id_problem(v)):
                raise ValueError(why)
            return v

        @model_validator(mode="after")
        def _check(self):
            if self.target == "hub" and not self.repo_id:
                raise ValueError("target: hub needs repo_id (user/name)")
            for split in [*self.files, *self.split_names]:
                if not re.fullmatch(r"[A-Za-z0-9][\w.-]*", split):
                    raise ValueError(f"split name {split!r}: use letters, digits, '_', '-' or '.'")
            if self.card and self.card_file:
                raise ValueError("give card or card_file, not both")
            if self.local_dir and not Path(self.local_dir).expanduser().is_absolute():
                raise ValueError(f"local_dir {self.local_dir!r} is relative: the folder is under "
                                 "artifacts/<recipe>/<step>/folder already; give an absolute path")
            return self

    # train/validation/test take one or more Datasets each; `splits` takes any number of
    # Datasets named by `split_names` (one name per Dataset; a repeated name merges them).
    inputs = {**{name: In(Dataset, many=True, required=False) for name in SPLIT_SLOTS},
              "splits": In(Dataset, many=True, required=False)}
    outputs = {"folder": Files, "report": Report}

    def external_files(self) -> list[str]:
        """Files named in config are part of the key: editing one republishes."""
        cfg = self.config  # relative paths are read from the recipe's folder (engine/recipe/paths.py)
        found = [str(p) for patterns in cfg.files.values() for pattern in patterns
                 for p in _glob(cfg.local_path(pattern))]
        return found + ([cfg.local_path(cfg.card_file)] if cfg.card_file else [])

    def preflight(self) -> list[str]:
        """Publishing to the Hub needs its token before anything runs."""
        from engine.cli.preflight import missing_secret

        problem = missing_secret(self.config.token_env) if self.config.target == "hub" else None
        return super().preflight() + ([problem] if problem else [])

    def run(self, ctx) -> None:
        cfg = self.config
        who = ctx.step_name or self.name
        splits = self.gather(ctx, who)
        if not splits:
            raise StepError(f"{who}: nothing to publish: bind train/validation/test inputs or set files")
        folder = ctx.out("folder")
        empty: list[str] = []
        layout = build_folder(folder, splits, who, empty)
        if empty:
            ctx.log.warning("left out split(s) with no rows: %s", ", ".join(empty))
            ctx.note(f"left out empty split{'s' if len(empty) > 1 else ''} {', '.join(empty)}")
        configs = configs_of(layout, who)
        record = run_record(ctx, cfg, layout)
        write_card(folder, configs, cfg, record, who)
        report: dict[str, Any] = {"target": cfg.target, "empty_splits": empty, "configs": {
            c: {s: {"files": v["data_files"], "rows": v["rows"]} for s, v in splits.items()}
            for c, splits in configs.items()}}
        if cfg.target == "local":
            if cfg.local_dir:
                dest = Path(cfg.local_dir).expanduser()
                shutil.copytree(folder, dest, dirs_exist_ok=True)
                report["local_dir"] = str(dest)
            ctx.log.info("published %d config(s) to %s", len(configs), cfg.local_dir or folder)
        else:
            report.update(upload(ctx, cfg, folder, who))
        ctx.write_metrics("report", report)

    # ---------------------------------------------------------------- inputs
    def gather(self, ctx, who: str) -> dict[str, list[Path]]:
        splits: dict[str, list[Path]] = {}
        for name in SPLIT_SLOTS:
            for ds in ctx.inputs.get(name) or []:
                parts = ds.parts()
                if not parts:
                    raise StepError(f"{who}: input {name}: {ds.path} holds no .parquet, .jsonl or .json files")
                splits.setdefault(name, []).extend(parts)
        extra = ctx.inputs.get("splits") or []
        if len(extra) != len(self.config.split_names):
            raise StepError(f"{who}: {len(extra)} dataset(s) bound to `splits` but split_names has "
                            f"{len(self.config.split_names)} name(s); give one name per dataset")
        for name, ds in zip(self.config.split_names, extra):
            parts = ds.parts()
            if not parts:
                raise StepError(f"{who}: splits ({name}): {ds.path} holds no .parquet, .jsonl or .json files")
            splits.setdefault(name, []).extend(parts)
        for name, patterns in self.config.files.items():
            found: list[Path] = []
            for pattern in patterns:
                matches = _glob(self.config.local_path(pattern))
                if not matches:
                    raise StepError(f"{who}: files.{name}: {pattern} matches no file")
                found.extend(matches)
            bad = [p for p in found if p.suffix.lower() not in (".parquet", ".jsonl", ".json")]
            if bad:
                raise StepError(f"{who}: files.{name}: {bad[0]}: expected .json, .jsonl or .parquet")
            splits.setdefault(name, []).extend(found)
        return splits


def _glob(pattern: str) -> list[Path]:
    import glob

    path = Path(pattern).expanduser()
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in (".parquet", ".jsonl", ".json"))
    return sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())


# -------------------------------------------------------------------- the folder

def build_folder(folder: Path, splits: dict[str, list[Path]], who: str,
                 empty_splits: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Write data/<split>_<stem>.parquet per file and copy JSON originals to <split>/.

    Splits without rows are left out (their names appended to `empty_splits`)."""
    import pyarrow.parquet as pq

    (folder / "data").mkdir(parents=True, exist_ok=True)
    layout: dict[str, dict[str, Any]] = {}
    empty = empty_splits if empty_splits is not None else []
    for split, files in splits.items():
        used: set[str] = set()
        entry = {"data_files": [], "originals": [], "rows": 0, "sources": [], "schema": None}
        for src in files:
            stem = _unique(_safe(src.stem), used)
            target = folder / "data" / f"{split}_{stem}.parquet"
            if src.suffix.lower() == ".parquet":
                from steps.common.arrowio import open_parquet

                rows = open_parquet(src, who).metadata.num_rows
                shutil.copyfile(src, target)
            else:
                rows = json_to_parquet(src, target, who)
                original = folder / split / f"{stem}{src.suffix.lower()}"
                original.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, original)
                entry["originals"].append(original.relative_to(folder).as_posix())
            schema = pq.read_schema(target)
            if entry["schema"] is None:
                entry["schema"], entry["schema_from"] = schema, src
            elif rows and not _same_columns(schema, entry["schema"]):
                raise StepError(
                    f"{who}: split {split}: {src} has columns {_describe(schema)} but {entry['schema_from']} has "
                    f"{_describe(entry['schema'])}; files of one split must share columns "
                    "(publish them as separate splits)")
            entry["data_files"].append(target.relative_to(folder).as_posix())
            entry["rows"] += rows
            entry["sources"].append({"file": src.name, "rows": rows, "sha256": _sha256(target)})
        if entry["rows"] == 0:  # `datasets` cannot load a split with no rows: leave it out, say so
            for rel in entry["data_files"] + entry["originals"]:
                (folder / rel).unlink()
            if (folder / split).is_dir() and not any((folder / split).iterdir()):
                (folder / split).rmdir()
            empty.append(split)
            continue
        layout[split] = entry
    if not layout:
        raise StepError(f"{who}: every split is empty ({', '.join(empty)}); nothing to publish")
    return layout


def configs_of(layout: dict[str, dict[str, Any]], who: str) -> dict[str, dict[str, dict[str, Any]]]:
    """{config: {split: entry}}: train/validation/test are the splits of config `default` (in that
    order, so they must share columns); any other name is a config of its own with split `train`."""
    configs: dict[str, dict[str, dict[str, Any]]] = {}
    for name in sorted(layout, key=lambda n: SPLIT_SLOTS.index(n) if n in SPLIT_SLOTS else len(SPLIT_SLOTS)):
        config, split = ("default", name) if name in SPLIT_SLOTS else (name, "train")
        configs.setdefault(config, {})[split] = layout[name]
    for config, splits in configs.items():
        (first, a), *rest = splits.items()
        for split, b in rest:
            if {f.name for f in a["schema"]} != {f.name for f in b["schema"]}:
                raise StepError(f"{who}: config {config}: split {split} has columns {_describe(b['schema'])} but split "
                                f"{first} has {_describe(a['schema'])}; the splits of one config must share columns "
                                "(bind the other data to `splits`, with a name of its own in split_names)")
    return configs


def _same_columns(a, b) -> bool:
    return [(f.name, str(f.type)) for f in a] == [(f.name, str(f.type)) for f in b]


def _describe(schema) -> str:
    return "[" + ", ".join(f"{f.name}: {f.type}" for f in schema) + "]"


def _safe(stem: str) -> str:
    return re.sub(r"[^\w.-]+", "_", stem).strip("_") or "file"


def _unique(stem: str, used: set[str]) -> str:
    name, i = stem, 2
    while name in used:
        name, i = f"{stem}_{i}", i + 1
    used.add(name)
    return name


def json_to_parquet(src: Path, target: Path, who: str) -> int:
    """Convert one JSON/JSONL file to parquet in batches (two passes: unify types, then write)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from steps.common.arrowio import BatchReader

    schemas = [b.schema for b in BatchReader(src, 10000, who)]
    if not schemas:
        pq.write_table(pa.table({}), target)
        return 0
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise StepError(f"{who}: {src}: rows have incompatible types ({e})") from None
    rows = 0
    with pq.ParquetWriter(target, schema) as writer:
        for batch in BatchReader(src, 10000, who):
            table = pa.Table.from_batches([batch])
            for name in schema.names:  # columns missing from this batch become nulls
                if name not in table.column_names:
                    table = table.append_column(name, pa.nulls(table.num_rows, schema.field(name).type))
            writer.write_table(table.select(schema.names).cast(schema))
            rows += batch.num_rows
    return rows


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -------------------------------------------------------------------- card

def run_record(ctx, cfg, layout) -> dict[str, Any]:
    """What made this dataset, from the engine's run info: recipe, profile, and for every
    upstream step its key, seed and models (a bound Model input wins over a configured name)."""
    info = dict(getattr(ctx, "run_info", None) or {})
    steps = info.pop("steps", None) or {}
    record: dict[str, Any] = _clean(info)
    if steps:
        record["steps"] = {}
        for label, st in steps.items():
            models = _models(st.get("config") or {})
            for slot, ref in (st.get("inputs") or {}).items():
                if "model" in slot and isinstance(ref, str):
                    models[slot] = ref
            record["steps"][label] = _clean({"uses": st.get("uses"), "version": st.get("version"),
                                             "key": st.get("key"), "seed": st.get("seed"), "models": models})
    own = (steps.get(info.get("step")) or {}).get("inputs") or {}
    upstream = []
    for slot, name, ds, ref in _bound(ctx, cfg, own):
        item = {"split": name, "digest": getattr(ds, "digest", None), "from": ref}
        made_by = steps.get(ref.rpartition(".")[0]) if ref else None
        if made_by:
            item.update({"uses": made_by.get("uses"), "key": made_by.get("key"), "seed": made_by.get("seed")})
        item = {k: v for k, v in item.items() if v not in (None, {}, "")}
        if len(item) > 1:
            upstream.append(item)
    if upstream:
        record["inputs"] = upstream
    record["files"] = {s: v["sources"] for s, v in layout.items()}
    if cfg.run_record:
        record.update(_clean(cfg.run_record))
    return _no_local_paths(record)


def _bound(ctx, cfg, refs: dict[str, Any]):
    """(slot, split name, dataset, the step output it came from) for every bound split."""
    def ref_at(slot, i):
        r = refs.get(slot)
        return r[i] if isinstance(r, list) and i < len(r) else (r if isinstance(r, str) else None)

    for slot in SPLIT_SLOTS:
        for i, ds in enumerate(ctx.inputs.get(slot) or []):
            yield slot, slot, ds, ref_at(slot, i)
    for i, (name, ds) in enumerate(zip(cfg.split_names, ctx.inputs.get("splits") or [])):
        yield "splits", name, ds, ref_at("splits", i)


def _models(config: dict[str, Any]) -> dict[str, Any]:
    """Config fields naming models (model, inference_model, judgement_model, ...)."""
    return {k: v for k, v in config.items() if "model" in k and isinstance(v, str) and v}


# an absolute or home path where a value or word starts (not in a URL, a step label or a relative path)
LOCAL_PATH = re.compile(r"(?:^|(?<=[\s=(,'\"]))~?/[^\s'\",;=]*")


def _no_local_paths(value):
    """The record with every absolute path cut to its last component: a card is public, and a
    path on this machine (a model directory, a --set value) says nothing to its readers."""
    if isinstance(value, dict):
        return {k: _no_local_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_local_paths(v) for v in value]
    if isinstance(value, str):
        return LOCAL_PATH.sub(lambda m: m.group(0).rstrip("/").rpartition("/")[2] or "/", value)
    return value


def _clean(value):
    """Drop anything whose key looks like a secret: a card is public."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if not SECRETISH.search(str(k))}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def size_category(rows: int) -> str:
    """The Hub's size_categories bucket for a row count ("n<1K", "1K<n<10K", ...)."""
    bounds = [(1_000, "1K"), (10_000, "10K"), (100_000, "100K"), (1_000_000, "1M"), (10_000_000, "10M"),
              (100_000_000, "100M"), (1_000_000_000, "1B")]
    lower = "n"
    for limit, name in bounds:
        if rows < limit:
            return f"n<{name}" if lower == "n" else f"{lower}<n<{name}"
        lower = name
    return "n>1T" if rows > 10 ** 12 else "1B<n<10B"


def write_card(folder: Path, configs, cfg, record: dict[str, Any], who: str) -> None:
    import yaml

    user_meta, body = {}, None
    text = cfg.card
    if cfg.card_file:
        path = Path(cfg.local_path(cfg.card_file)).expanduser()
        if not path.is_file():
            raise StepError(f"{who}: card_file {path}: file not found")
        text = path.read_text(encoding="utf-8")
    if text is not None:
        user_meta, body = _split_front_matter(text, who)
    default = cfg.default_config or ("default" if "default" in configs else next(iter(configs)))
    if default not in configs:
        raise StepError(f"{who}: default_config {default!r} is not a config of this dataset "
                        f"(configs: {', '.join(configs)})")
    meta: dict[str, Any] = dict(user_meta)
    meta["configs"] = [_config_yaml(name, splits, name == default) for name, splits in configs.items()]
    meta.setdefault("task_categories", list(cfg.task_categories))
    meta.setdefault("language", list(cfg.language))
    rows = sum(v["rows"] for splits in configs.values() for v in splits.values())
    meta.setdefault("size_categories", [size_category(rows)])
    for key in ("pretty_name", "license"):
        if getattr(cfg, key):
            meta[key] = getattr(cfg, key)
    if cfg.tags:
        meta["tags"] = sorted(set(meta.get("tags") or []) | set(cfg.tags))
    if body is None:
        body = _default_body(configs, cfg, default)
    provenance = ("\n## Provenance\n\nMade with mathrecipe (`publish.hub`). The run record below names the recipe, "
                  "the step keys, models and seeds that produced these files.\n\n```json\n"
                  + json.dumps(record, indent=2, sort_keys=True, default=str) + "\n```\n")
    text = ("---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n" + body.rstrip() + "\n"
            + _columns(configs) + provenance)
    (folder / "README.md").write_text(text, encoding="utf-8")


def _config_yaml(name: str, splits: dict[str, dict[str, Any]], default: bool) -> dict[str, Any]:
    """One entry of the card's `configs`: its splits and their files (`default`: what
    `load_dataset(folder)` loads without naming a config)."""
    files = [{"split": split, "path": v["data_files"][0] if len(v["data_files"]) == 1 else v["data_files"]}
             for split, v in splits.items()]
    return {"config_name": name, "data_files": files, **({"default": True} if default else {})}


def _columns(configs) -> str:
    """A table of columns and types per config."""
    lines = ["", "## Columns", ""]
    for name, splits in configs.items():
        schema = next(iter(splits.values()))["schema"]
        lines += [f"### `{name}`", "", "| column | type |", "| --- | --- |"]
        lines += [f"| `{f.name}` | {f.type} |" for f in schema] + [""]
    return "\n".join(lines)


def _split_front_matter(text: str, who: str) -> tuple[dict[str, Any], str]:
    import yaml

    m = re.match(r"\A---\s*\n(.*?)\n---\s*\n?", text, re.S)
    if not m:
        return {}, text
    try:
        meta = yaml.safe_load(m.group(1)) or {}
    except yaml.YAMLError as e:
        raise StepError(f"{who}: card: the YAML front matter does not parse ({e})") from None
    if not isinstance(meta, dict):
        raise StepError(f"{who}: card: the YAML front matter must be a mapping")
    return meta, text[m.end():]


def _default_body(configs, cfg, default: str) -> str:
    title = cfg.pretty_name or (cfg.repo_id.split("/")[-1] if cfg.repo_id else "Dataset")
    lines = [f"# {title}", ""]
    if cfg.description:
        lines += [cfg.description, ""]
    lines += ["| config | split | rows | files |", "| --- | --- | ---: | ---: |"]
    lines += [f"| {c} | {s} | {v['rows']} | {len(v['data_files'])} |"
              for c, splits in configs.items() for s, v in splits.items()]
    repo = cfg.repo_id or "path/to/this/folder"
    lines += ["", "## Loading", "", "```python", "from datasets import load_dataset", "",
              f'ds = load_dataset("{repo}")  # {default}: {", ".join(configs[default])}']
    lines += [f'load_dataset("{repo}", "{c}")  # {", ".join(configs[c])}' for c in configs if c != default]
    lines += ["```", "", "The original JSON files are kept under `<split>/`; `data/<split>_*.parquet` holds one "
              "parquet per file."]
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------- the Hub

def upload(ctx, cfg, folder: Path, who: str) -> dict[str, Any]:
    token = ctx.secret(cfg.token_env)
    repo = cfg.repo_id

    def fail(what: str, e: Exception):
        # its start (scrub_pieces tries every piece of the token: its cost grows with the text), scrubbed
        # (the token in any echoed form, or a piece of it), then made one short line
        message = f"{type(e).__name__}: {e}"[: 64 * MAX_ERROR_CHARS]
        message = " ".join(scrub_pieces(scrub(message), token).split())
        if len(message) > MAX_ERROR_CHARS:
            message = message[:MAX_ERROR_CHARS] + "..."
        raise StepError(f"{who}: {what} {repo} failed ({message})") from None

    local = sorted(p for p in folder.rglob("*") if p.is_file())
    try:
        api = make_hf_api(token, cfg.timeout_s)
        api.create_repo(repo, repo_type="dataset", private=cfg.private, exist_ok=True)
    except Exception as e:
        fail("creating dataset repo", e)
    remote = {}
    try:
        for item in api.list_repo_tree(repo, repo_type="dataset", recursive=True, revision=cfg.revision):
            if hasattr(item, "blob_id"):
                remote[item.path] = item
    except Exception as e:
        if type(e).__name__ not in ("EntryNotFoundError", "RevisionNotFoundError", "RemoteEntryNotFoundError"):
            fail("listing files of", e)
    uploads, skipped = [], []
    for path in local:
        rel = path.relative_to(folder).as_posix()
        (skipped if _same_content(path, remote.get(rel)) else uploads).append(rel)
    result: dict[str, Any] = {"repo_id": repo, "private": cfg.private, "revision": cfg.revision or "main",
                              "uploaded": uploads, "skipped": skipped, "commit": None}
    if not uploads:
        ctx.log.info("%s: all %d files already in %s; no commit", who, len(skipped), repo)
        return result
    from huggingface_hub import CommitOperationAdd

    operations = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(folder / rel)) for rel in uploads]
    try:
        info = api.create_commit(repo, operations=operations, commit_message=cfg.commit_message,
                                 repo_type="dataset", revision=cfg.revision)
    except Exception as e:
        fail("uploading to", e)
    result["commit"] = getattr(info, "oid", None)
    result["commit_url"] = getattr(info, "commit_url", None)
    ctx.log.info("%s: uploaded %d file(s) to %s, skipped %d unchanged", who, len(uploads), repo, len(skipped))
    return result


def _same_content(path: Path, remote) -> bool:
    """Is `path` byte-identical to the repo's file? LFS files carry a sha256, others a git blob id."""
    if remote is None or remote.size != path.stat().st_size:
        return False
    lfs = getattr(remote, "lfs", None)
    if lfs:
        sha = lfs["sha256"] if isinstance(lfs, dict) else getattr(lfs, "sha256", None)
        return sha == _sha256(path)
    data = path.read_bytes()
    return remote.blob_id == hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
