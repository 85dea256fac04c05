"""publish.hub: the folder (layout, parquet per file, originals, card) is real and loads with
`datasets`; the Hub boundary is a fake HfApi object, so those tests say "fake_hfapi"."""
from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import steps.publish.hub as publish
from engine.recipe.errors import StepError
from engine.run.testing import run_step

TOKEN = "hf_FAKEtoken_abcdef123456"


def rows(split: str, n: int, start: int = 0):
    return [{"problem": f"{split} problem {i}", "answer": str(i),
             "pass_rate_72b_tir": "n/a" if i % 3 == 0 else "0.0625"}
            for i in range(start, start + n)]


@pytest.fixture
def splits(tmp_path):
    train = tmp_path / "results" / "train"
    val = tmp_path / "results" / "validation"
    train.mkdir(parents=True)
    val.mkdir(parents=True)
    (train / "file1.json").write_text(json.dumps(rows("train", 4), indent=2))
    (train / "file2.json").write_text(json.dumps(rows("train", 3, 4)))
    (val / "file1.json").write_text(json.dumps(rows("validation", 2)))
    test_file = tmp_path / "extra" / "held_out.jsonl"
    test_file.parent.mkdir()
    test_file.write_text("".join(json.dumps(r) + "\n" for r in rows("test", 2)))
    return SimpleNamespace(train=train, val=val, test=test_file)


def publish_local(tmp_path, splits, **config):
    return run_step("publish.hub", {"target": "local", "files": {"test": [str(splits.test)]}, **config},
                    {"train": [splits.train], "validation": [splits.val]}, workdir=tmp_path / "w")


def test_local_publish_writes_the_seed_layout_and_loads_with_datasets(tmp_path, splits):
    from datasets import load_dataset
    from huggingface_hub import DatasetCard

    out = publish_local(tmp_path, splits, pretty_name="OpenMath hard")
    folder = out["folder"].path
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert files == ["README.md", "data/test_held_out.parquet", "data/train_file1.parquet", "data/train_file2.parquet",
                     "data/validation_file1.parquet", "test/held_out.jsonl", "train/file1.json", "train/file2.json",
                     "validation/file1.json"]
    assert (folder / "train" / "file1.json").read_bytes() == (splits.train / "file1.json").read_bytes()

    # train, validation and test are the splits of one config, as `datasets` and the Hub expect
    for ds in (load_dataset(str(folder)), load_dataset(str(folder), "default")):
        assert list(ds) == ["train", "validation", "test"]
        assert ds["train"].to_list() == rows("train", 7)
        assert ds["validation"].to_list() == rows("validation", 2)
        assert ds["test"].to_list() == rows("test", 2)

    card = DatasetCard.load(folder / "README.md")
    assert card.data.configs == [
        {"config_name": "default", "default": True, "data_files": [
            {"split": "train", "path": ["data/train_file1.parquet", "data/train_file2.parquet"]},
            {"split": "validation", "path": "data/validation_file1.parquet"},
            {"split": "test", "path": "data/test_held_out.parquet"}]},
    ]
    assert card.data.pretty_name == "OpenMath hard"
    assert (card.data.task_categories, card.data.language, card.data.size_categories) == (
        ["text-generation"], ["en"], ["n<1K"])
    assert "| default | train | 7 | 2 |" in card.text
    assert ("### `default`\n\n| column | type |\n| --- | --- |\n| `problem` | string |\n| `answer` | string |\n"
            in card.text)
    report = out["report"].metrics()
    assert report["configs"]["default"]["train"] == {"files": ["data/train_file1.parquet", "data/train_file2.parquet"],
                                                     "rows": 7}


def test_card_embeds_the_run_record(tmp_path, splits):
    from engine.recipe.artifact_types import Dataset
    from engine.run.step_process import execute, validate_config
    from steps.publish.hub import PublishHub

    run_info = {"recipe": "openmath_sft", "profile": "tiny", "sets": {}, "step": "publish", "key": "abc12345deadbeef",
                "steps": {"hard": {"uses": "filter.by_label", "version": "1", "key": "ab12cd", "seed": 3,
                                   "config": {"max_pass_rate": 0.1}},
                          "gen": {"uses": "generate.from_seed", "version": "1", "key": "ef34", "seed": 7,
                                  "config": {"model": "Qwen/Qwen3-32B", "api_token": "must-not-appear"}}}}
    cfg = validate_config(PublishHub, {"run_record": {"note": "tiny profile", "hf_token": "must-not-appear"}})
    out = execute(PublishHub, cfg, {"train": [Dataset(splits.train)], "validation": [], "test": []},
                  tmp_path / "out", tmp_path / "scratch", key="abc12345deadbeef", label="publish",
                  log_path=tmp_path / "log.txt", run_info=run_info)
    text = (out["folder"].path / "README.md").read_text()
    record = json.loads(text.split("```json\n", 1)[1].split("\n```", 1)[0])
    assert (record["recipe"], record["profile"], record["key"]) == ("openmath_sft", "tiny", "abc12345deadbeef")
    assert record["steps"]["hard"] == {"uses": "filter.by_label", "version": "1", "key": "ab12cd", "seed": 3,
                                       "models": {}}
    assert record["steps"]["gen"]["models"] == {"model": "Qwen/Qwen3-32B"} and record["steps"]["gen"]["seed"] == 7
    assert record["note"] == "tiny profile" and "must-not-appear" not in text
    sha = hashlib.sha256((out["folder"].path / "data" / "train_file1.parquet").read_bytes()).hexdigest()
    assert record["files"]["train"][0] == {"file": "file1.json", "rows": 4, "sha256": sha}


def test_user_card_text_is_kept_and_configs_added(tmp_path, splits):
    from huggingface_hub import DatasetCard

    readme = tmp_path / "original_readme.log"
    readme.write_text("---\nlicense: cc-by-4.0\nconfigs: [old]\n---\n# My dataset\n\nHand-written words.\n")
    out = publish_local(tmp_path, splits, card_file=str(readme))
    card = DatasetCard.load(out["folder"].path / "README.md")
    assert card.data.license == "cc-by-4.0"
    assert [c["config_name"] for c in card.data.configs] == ["default"]
    assert card.text.lstrip().startswith("# My dataset\n\nHand-written words.\n")
    assert "## Columns\n\n### `default`\n" in card.text  # added to the user's own text
    assert "## Provenance" in card.text


def test_parquet_parts_are_copied_without_originals(tmp_path):
    ds = tmp_path / "filtered"
    ds.mkdir()
    pq.write_table(pa.Table.from_pylist(rows("train", 3)), ds / "part-00000.parquet")
    out = run_step("publish.hub", {}, {"train": [ds]}, workdir=tmp_path / "w")
    folder = out["folder"].path
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "README.md", "data/train_part-00000.parquet"]
    assert (folder / "data" / "train_part-00000.parquet").read_bytes() == (ds / "part-00000.parquet").read_bytes()


def test_same_file_name_from_two_datasets_gets_a_suffix(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d, start in ((a, 0), (b, 10)):
        d.mkdir()
        (d / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows("train", 2, start)))
    out = run_step("publish.hub", {}, {"train": [a, b]}, workdir=tmp_path / "w")
    folder = out["folder"].path
    assert (folder / "data" / "train_data.parquet").exists() and (folder / "data" / "train_data_2.parquet").exists()
    assert (folder / "train" / "data_2.jsonl").read_bytes() == (b / "data.jsonl").read_bytes()


def test_split_with_different_columns_is_a_clear_error(tmp_path):
    d = tmp_path / "mixed"
    d.mkdir()
    (d / "a.jsonl").write_text(json.dumps({"problem": "x", "answer": "1"}) + "\n")
    (d / "b.jsonl").write_text(json.dumps({"question": "y"}) + "\n")
    with pytest.raises(StepError, match=r"split train: .*b\.jsonl has columns \[question: string\]"):
        run_step("publish.hub", {}, {"train": [d]}, workdir=tmp_path / "w")


def test_json_that_is_not_an_array_or_jsonl_names_the_file(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "seed.json").write_text('{\n  "problem": "x"\n}\n')
    with pytest.raises(StepError, match=r"bad/seed\.json:1: not valid JSON Lines"):
        run_step("publish.hub", {}, {"train": [d]}, workdir=tmp_path / "w")


def test_hub_target_needs_a_repo_id():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="needs repo_id"):
        run_step("publish.hub", {"target": "hub"}, {}, workdir="/nonexistent")


# ---------------------------------------------------------------- the Hub boundary (fake HfApi)

class FakeHfApi:
    """Records the calls publish.hub makes; `remote` maps path -> bytes already in the repo."""

    def __init__(self, token, remote=None, fail_on=None):
        self.token, self.remote, self.fail_on = token, remote if remote is not None else {}, fail_on
        self.calls: list[tuple] = []

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw))
        if self.fail_on == "create_repo":
            raise RuntimeError(f"401 Client Error: bad credentials (Authorization: Bearer {self.token})")

    def list_repo_tree(self, repo_id, **kw):
        self.calls.append(("list_repo_tree", repo_id, kw))
        for path, data in self.remote.items():
            if path.endswith(".parquet"):  # LFS files: the Hub reports their sha256
                yield SimpleNamespace(path=path, size=len(data), blob_id="0" * 40,
                                      lfs={"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
            else:
                yield SimpleNamespace(path=path, size=len(data), lfs=None,
                                      blob_id=hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest())

    def create_commit(self, repo_id, operations, **kw):
        ops = [(op.path_in_repo, Path(op.path_or_fileobj).read_bytes()) for op in operations]
        self.calls.append(("create_commit", repo_id, [p for p, _ in ops], kw))
        if self.fail_on == "create_commit":
            raise RuntimeError(f"403 Forbidden: token {self.token} cannot write to {repo_id}")
        self.remote.update(ops)
        return SimpleNamespace(oid="c0ffee", commit_url=f"https://huggingface.co/datasets/{repo_id}/commit/c0ffee")


@pytest.fixture
def fake_hub(monkeypatch):
    state = SimpleNamespace(api=None, remote={}, fail_on=None)

    def factory(token, timeout_s):
        state.api = FakeHfApi(token, state.remote, state.fail_on)
        return state.api

    monkeypatch.setattr(publish, "make_hf_api", factory)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return state


def test_hub_upload_with_fake_hfapi_creates_private_repo_and_one_commit_skipping_unchanged(tmp_path, splits, fake_hub):
    from datasets import load_dataset

    # first build the folder locally to know which bytes "the Hub" already has
    local = publish_local(tmp_path / "first", splits)["folder"].path
    fake_hub.remote.update({
        "data/train_file1.parquet": (local / "data" / "train_file1.parquet").read_bytes(),  # same (LFS sha256)
        "train/file1.json": (local / "train" / "file1.json").read_bytes(),                  # same (git blob id)
        "train/file2.json": b"[]\n",                                                         # changed
    })
    out = run_step("publish.hub", {"target": "hub", "repo_id": "me/openmath-hard", "private": True,
                                   "files": {"test": [str(splits.test)]}},
                   {"train": [splits.train], "validation": [splits.val]}, workdir=tmp_path / "w")
    api = fake_hub.api
    assert api.token == TOKEN
    assert [c[0] for c in api.calls] == ["create_repo", "list_repo_tree", "create_commit"]
    assert api.calls[0] == ("create_repo", "me/openmath-hard",
                            {"repo_type": "dataset", "private": True, "exist_ok": True})
    _, repo, paths, kw = api.calls[2]
    assert repo == "me/openmath-hard" and kw["repo_type"] == "dataset"
    assert paths == ["README.md", "data/test_held_out.parquet", "data/train_file2.parquet",
                     "data/validation_file1.parquet", "test/held_out.jsonl", "train/file2.json",
                     "validation/file1.json"]
    report = out["report"].metrics()
    assert report["skipped"] == ["data/train_file1.parquet", "train/file1.json"]
    assert report["commit"] == "c0ffee" and report["private"] is True
    # the folder it uploaded is real and loads unchanged
    assert load_dataset(str(out["folder"].path))["train"].num_rows == 7

    # nothing changed: a second publish makes no commit
    again = run_step("publish.hub",
                     {"target": "hub", "repo_id": "me/openmath-hard", "files": {"test": [str(splits.test)]}},
                     {"train": [splits.train], "validation": [splits.val]}, workdir=tmp_path / "w2")
    assert again["report"].metrics()["uploaded"] == []
    assert [c[0] for c in fake_hub.api.calls] == ["create_repo", "list_repo_tree"]
    assert again["report"].metrics()["uploaded"] == [] and again["report"].metrics()["commit"] is None


@pytest.mark.parametrize("fail_on", ["create_repo", "create_commit"])
def test_token_never_in_error_log_or_records_when_fake_hfapi_upload_fails(tmp_path, splits, fake_hub, fail_on):
    fake_hub.fail_on = fail_on
    with pytest.raises(StepError) as e:
        run_step("publish.hub", {"target": "hub", "repo_id": "me/x"}, {"train": [splits.train]}, workdir=tmp_path / "w")
    assert TOKEN not in str(e.value) and "***" in str(e.value)
    assert e.value.__cause__ is None and e.value.__suppress_context__
    for path in (tmp_path / "w").rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_token_never_in_folder_or_report_after_fake_hfapi_upload(tmp_path, splits, fake_hub):
    run_step("publish.hub", {"target": "hub", "repo_id": "me/x"}, {"train": [splits.train]}, workdir=tmp_path / "w")
    assert fake_hub.api.calls[-1][0] == "create_commit"
    for path in (tmp_path / "w").rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_missing_token_is_a_clear_error(tmp_path, splits, fake_hub, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("RECIPE_KEYS_FILE", str(tmp_path / "nokeys"))
    with pytest.raises(StepError, match="secret HF_TOKEN is not set"):
        run_step("publish.hub", {"target": "hub", "repo_id": "me/x"}, {"train": [splits.train]}, workdir=tmp_path / "w")


def test_named_splits_input_with_split_names(tmp_path, splits):
    from datasets import load_dataset

    gen = tmp_path / "generated"
    gen.mkdir()
    (gen / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows("gen", 3)))
    out = run_step("publish.hub", {"split_names": ["cot", "generated"]}, {"splits": [splits.train, gen]},
                   workdir=tmp_path / "w")
    folder = out["folder"].path
    assert load_dataset(str(folder), "generated")["train"].num_rows == 3
    assert load_dataset(str(folder), "cot")["train"].num_rows == 7
    assert (folder / "data" / "cot_file1.parquet").exists() and (folder / "generated" / "data.jsonl").exists()
    with pytest.raises(StepError, match="2 dataset\\(s\\) bound to `splits` but split_names has 1 name"):
        run_step("publish.hub", {"split_names": ["cot"]}, {"splits": [splits.train, gen]}, workdir=tmp_path / "w2")


def test_empty_split_is_left_out_and_reported(tmp_path, splits):
    from datasets import load_dataset

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "data.jsonl").write_text("")
    out = run_step("publish.hub", {}, {"train": [splits.train], "test": [empty]}, workdir=tmp_path / "w")
    folder = out["folder"].path
    assert out["report"].metrics()["empty_splits"] == ["test"]
    assert not (folder / "test").exists() and not (folder / "data" / "test_data.parquet").exists()
    assert "split: test" not in (folder / "README.md").read_text()
    assert list(load_dataset(str(folder))) == ["train"] and load_dataset(str(folder))["train"].num_rows == 7
    with pytest.raises(StepError, match="every split is empty"):
        run_step("publish.hub", {}, {"test": [empty]}, workdir=tmp_path / "w2")


def test_config_splits_must_share_columns_and_the_default_must_exist(tmp_path, splits):
    other = tmp_path / "other"
    other.mkdir()
    (other / "q.jsonl").write_text(json.dumps({"question": "y"}) + "\n")
    with pytest.raises(StepError, match=r"config default: split test has columns \[question: string\] but split train "
                                        r"has \[problem: string, .*\]; the splits of one config must share columns"):
        run_step("publish.hub", {}, {"train": [splits.train], "test": [other]}, workdir=tmp_path / "w1")
    out = run_step("publish.hub", {"split_names": ["questions"]}, {"train": [splits.train], "splits": [other]},
                   workdir=tmp_path / "w2")  # a config of its own
    assert out["report"].metrics()["configs"] == {
        "default": {"train": {"files": ["data/train_file1.parquet", "data/train_file2.parquet"], "rows": 7}},
        "questions": {"train": {"files": ["data/questions_q.parquet"], "rows": 1}}}
    with pytest.raises(StepError, match=r"default_config 'test' is not a config of this dataset "
                                        r"\(configs: default, questions\)"):
        run_step("publish.hub", {"split_names": ["questions"], "default_config": "test"},
                 {"train": [splits.train], "splits": [other]}, workdir=tmp_path / "w3")


def test_no_local_path_in_the_card(tmp_path, splits):
    from engine.recipe.artifact_types import Dataset
    from engine.run.step_process import execute, validate_config
    from steps.publish.hub import PublishHub

    home = str(Path.home())
    run_info = {"recipe": "r", "sets": [f"vars.model={home}/models/my-model"], "step": "publish",
                "steps": {"gen": {"uses": "generate.from_seed", "key": "ef34",
                                  "config": {"model": "/srv/models/Qwen3-32B", "judge_model": "Qwen/Qwen3-32B"}}}}
    cfg = validate_config(PublishHub, {"run_record": {"source": f"{tmp_path}/data/x.json", "url": "https://hf.co/a/b"}})
    out = execute(PublishHub, cfg, {"train": [Dataset(splits.train)], "validation": [], "test": []},
                  tmp_path / "out", tmp_path / "scratch", key="abc12345deadbeef", label="publish",
                  log_path=tmp_path / "log.txt", run_info=run_info)
    text = (out["folder"].path / "README.md").read_text()
    record = json.loads(text.split("```json\n", 1)[1].split("\n```", 1)[0])
    assert record["steps"]["gen"]["models"] == {"model": "Qwen3-32B", "judge_model": "Qwen/Qwen3-32B"}
    assert record["sets"] == ["vars.model=my-model"] and record["source"] == "x.json"
    assert record["url"] == "https://hf.co/a/b"
    assert home not in text and str(tmp_path) not in text and "/srv/" not in text


@pytest.mark.slow
def test_the_quickstart_publish_loads_offline_config_by_config_with_no_local_path(tmp_path, tmp_path_factory):
    """Every config by name and the default unnamed, with HF_HUB_OFFLINE=1; train and test are
    splits of one config (they were three configs each with a "train" split)."""
    from _published import load_published, text_leaks
    from _tiny import quickstart_tiny_run
    from conftest import ROOT
    from huggingface_hub import DatasetCard

    run = quickstart_tiny_run(tmp_path_factory)
    folder = run.artifacts / "quickstart" / "publish" / "folder"
    forbidden = [str(run.tmp), str(ROOT), str(Path.home()) + "/"]
    got = load_published(folder, forbidden, tmp_path)
    assert list(got["default"]) == ["train", "test"] and min(got["default"].values()) > 0
    assert list(got["configs"]) == ["default", "errors"]
    default, errors = got["configs"]["default"], got["configs"]["errors"]
    assert list(default) == ["train", "test"] and default["train"]["columns"] == default["test"]["columns"]
    assert list(errors) == ["train"] and errors["train"]["rows"] > 0 and "predicted" in errors["train"]["columns"]
    assert got["leaks"] == [] and text_leaks(folder, forbidden) == []
    card = DatasetCard.load(folder / "README.md")
    for name, config in got["configs"].items():  # the card lists each config's columns
        columns = card.text.split(f"### `{name}`\n\n", 1)[1].split("\n\n", 1)[0]
        assert [line.split("`")[1] for line in columns.splitlines()[2:]] == next(iter(config.values()))["columns"]


def test_rows_name_a_model_by_hub_id_folder_name_or_digest_never_its_path(tmp_path):
    from engine.cache.digest import tree_digest
    from engine.recipe.artifact_types import Model
    from steps.common.models import model_ref

    model = tmp_path / "models" / "my-model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    cfg = SimpleNamespace(model="Qwen/Qwen3-32B")
    assert model_ref(SimpleNamespace(inputs={"model": None}), cfg) == "Qwen/Qwen3-32B"
    assert model_ref(SimpleNamespace(inputs={}), SimpleNamespace(model=str(model))) == "my-model"
    bound = SimpleNamespace(inputs={"model": Model(model)})  # a step's output in the cache
    assert model_ref(bound, cfg) == f"blake3:{tree_digest(model)}"
    bound = SimpleNamespace(inputs={"model": Model(model, digest="ab" * 32)})
    assert model_ref(bound, cfg) == "blake3:" + "ab" * 32


# ---------------------------------------------------------------- the real Hub client, a local server as the Hub
class _Hub(BaseHTTPRequestHandler):
    """The Hub upload endpoint (the one fake): `mode` says how it answers every request."""

    mode = "hang"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        token = self.headers.get("Authorization", "").split(" ", 1)[-1]
        if self.mode == "hang":
            time.sleep(30)  # never answers in time; the client gives up first
            return
        if self.mode == "echo_start":  # the start of the token only, which no whole-value scrub finds
            status, body = 401, json.dumps({"error": f"token {token[:12]}... is not valid"}).encode()
        else:  # a proxy's HTML error page, many lines and kilobytes
            status, body = 502, b"<html>\n<head><title>502 Bad Gateway</title></head>\n" + b"<p>x</p>\n" * 2000
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


HUB_RECIPE = """recipe: pub
steps:
  - id: problems
    uses: problems.arithmetic
    with: {count: 4, seed: 0}
  - id: publish
    uses: publish.hub
    with: {target: hub, repo_id: REPO, timeout_s: 1}
    inputs: {train: ["${steps.problems.problems}"]}
"""
HUB_TOKEN = "plain/hub+token=ABCDEFGH12345xyz"  # no token shape: only what the step read is known


@pytest.fixture
def local_hub(cli):
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Hub", (_Hub,), {}))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cli.env.update(HF_TOKEN=HUB_TOKEN, HF_ENDPOINT=f"http://127.0.0.1:{server.server_port}", HF_HUB_OFFLINE="0")
    yield server.RequestHandlerClass
    server.shutdown()
    server.server_close()


def _publish(cli, repo: str = "me/x", check: int = 1):
    (cli.tmp / "pub.yaml").write_text(HUB_RECIPE.replace("REPO", repo))
    p = cli("run", "pub.yaml", check=check, timeout=120)
    return p, " ".join((p.stdout + p.stderr).split())


def _no_piece_of_the_token(cli, p):
    from test_engine_secrets import all_text

    text = p.stdout + p.stderr + all_text(cli.cache) + all_text(cli.artifacts)
    assert not [HUB_TOKEN[i:i + 8] for i in range(len(HUB_TOKEN) - 7) if HUB_TOKEN[i:i + 8] in text]


def test_a_hub_that_never_answers_fails_the_step_in_timeout_s_local_server_as_hub(cli, local_hub):
    """huggingface_hub's client waits forever for an answer (timeout=None): the step hung."""
    local_hub.mode = "hang"
    p, out = _publish(cli)
    assert "publish: creating dataset repo me/x failed (" in out and "timed out" in out, out
    assert cli.statuses()["publish"] == "failed"
    assert "Traceback" not in out
    _no_piece_of_the_token(cli, p)


def test_a_hub_error_page_is_one_short_line_local_server_as_hub(cli, local_hub):
    """A 502 HTML page was quoted whole in the error: 2,000 lines, each its own line of output."""
    local_hub.mode = "html"
    p, _ = _publish(cli)
    quoting = [x for x in (p.stdout + p.stderr).splitlines() if "502" in x or "<p>" in x]
    assert quoting and all("creating dataset repo me/x failed (HfHubHTTPError: Server error '502 Bad Gateway'" in x
                           and x.rstrip().endswith("...)") and len(x) < 500 for x in quoting), quoting


def test_the_start_of_the_token_echoed_by_the_hub_is_scrubbed_local_server_as_hub(cli, local_hub):
    """The step replaced only the whole token: a server quoting its first 12 characters put them in
    the error, the failed log and the run record."""
    local_hub.mode = "echo_start"
    p, out = _publish(cli)
    assert "401" in out and "token ***... is not valid" in out, out
    _no_piece_of_the_token(cli, p)


NOT_A_HUB_NAME = ("expected user/name, each 1-96 letters, digits, '_', '-' or '.', starting and ending with a "
                  "letter, digit or '_'")


@pytest.mark.parametrize("repo, why", [
    ("me/a--b", "the Hub refuses '--' and '..' in a name"),
    ("me/x.git", "the Hub refuses a name ending in .git"),
    ("me/-x", NOT_A_HUB_NAME),
    ("me/" + "x" * 97, NOT_A_HUB_NAME),
    ("mé/x", NOT_A_HUB_NAME),
])
def test_a_repo_id_the_hub_refuses_is_a_plan_time_error(cli, local_hub, repo, why):
    """`[\\w.-]+/[\\w.-]+` let these through: the step built the whole folder, then create_repo refused."""
    p, out = _publish(cli, repo, check=2)
    assert f"error: pub.yaml:8:25: step publish: config field 'repo_id': Value error, {why} (got {repo!r})" in out, out
    assert not list(cli.cache.rglob("entry.json"))
