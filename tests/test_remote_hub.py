"""The Hub as a remote. The Hub itself is out of reach from this machine, so HfApi is faked
at the upload boundary (its list and commit calls); everything before that boundary is real."""
from types import SimpleNamespace

import huggingface_hub
from test_engine_cache import demo

from engine.cache.remote import push
from engine.cache.store import Store


def test_push_to_a_hub_repo_is_one_commit_hfapi_faked_at_upload_boundary(cli, monkeypatch):
    f = demo(cli)
    cli("run", f)
    commits, repo = [], set()

    def list_repo_files(self, repo_id, repo_type=None, **kw):
        assert (repo_id, repo_type) == ("org/team-cache", "dataset")
        return sorted(repo)

    def create_commit(self, repo_id, operations, *, commit_message, repo_type=None, **kw):
        ops = list(operations)
        commits.append((repo_id, repo_type, [op.path_in_repo for op in ops]))
        repo.update(op.path_in_repo for op in ops)

    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", list_repo_files)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_commit", create_commit)
    store = Store(cli.cache)
    assert push(store, "hf://datasets/org/team-cache/cache") == (6, 1, [])
    assert len(commits) == 1
    repo_id, repo_type, paths = commits[0]
    assert (repo_id, repo_type) == ("org/team-cache", "dataset")
    assert all(p.startswith("cache/") for p in paths)
    assert sum(p.endswith("/entry.json") for p in paths) == 6 and "cache/runs/" + store.runs.ids()[0] + ".json" in paths

    assert push(store, "hf://datasets/org/team-cache/cache") == (0, 0, [])  # everything is there: no commit
    assert len(commits) == 1


def test_push_to_a_hub_bucket_is_two_batches_entry_json_last_hfapi_faked_at_upload_boundary(cli, monkeypatch):
    f = demo(cli)
    cli("run", f)
    batches, bucket = [], set()

    def list_bucket_tree(self, bucket_id, prefix=None, recursive=None, **kw):
        assert (bucket_id, prefix, recursive) == ("org/team-cache", "cache/", True)
        return [SimpleNamespace(type="file", path=p) for p in sorted(bucket) if p.startswith(prefix)]

    def batch_bucket_files(self, bucket_id, *, add=None, **kw):
        batches.append([dest for _, dest in add])
        bucket.update(dest for _, dest in add)

    monkeypatch.setattr(huggingface_hub.HfApi, "list_bucket_tree", list_bucket_tree)
    monkeypatch.setattr(huggingface_hub.HfApi, "batch_bucket_files", batch_bucket_files)
    store = Store(cli.cache)
    assert push(store, "hf://buckets/org/team-cache/cache") == (6, 1, [])
    outputs, entries = batches
    assert not [p for p in outputs if p.endswith("/entry.json")] and outputs
    assert sum(p.endswith("/entry.json") for p in entries) == 6 and len(entries) == 7  # and the run record

    assert push(store, "hf://buckets/org/team-cache/cache") == (0, 0, [])
    assert len(batches) == 2
