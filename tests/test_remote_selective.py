"""`recipe pull REMOTE --recipe FILE` and `--run ID` fetch only what that recipe or run needs (as
`dvc pull TARGET`), on a file:// remote and on a real S3 server (moto on loopback); a remote
prefix with nothing in it is an error, not "pulled 0 entries"."""
import itertools

import pytest
from _s3 import S3Server
from test_engine_cache import demo


def keys_in(cache):
    return {p.parent.name for p in cache.rglob("entry.json")}


def run_keys(cli, cache=None):
    return {n["key"] for n in cli.last_run(cache)["nodes"]}


@pytest.fixture
def shared(cli, tmp_path):
    """Alice ran the demo twice (default and --profile small) and pushed to a file:// remote."""
    f = demo(cli)
    cli("run", f)
    default = cli.last_run()
    cli("run", f, "--profile", "small")
    small = cli.last_run()
    url = f"file://{tmp_path / 'remote'}"
    cli("push", url)
    return f, url, default, small


def test_pull_for_a_recipe_fetches_its_entries_and_nothing_else(cli, tmp_path, shared):
    f, url, default, small = shared
    bob = tmp_path / "bob"
    out = cli("pull", url, "--recipe", f, "--profile", "small", cache=bob).stdout
    wanted = {n["key"] for n in small["nodes"]}
    assert keys_in(bob) == wanted and keys_in(bob) != {n["key"] for n in default["nodes"]}
    assert not (bob / "runs").exists() or not list((bob / "runs").iterdir())  # no run records
    assert f"pulled {len(wanted)} entries and 0 run records for recipe demo (profile small)" in out
    assert "6 of 6 step entries are in the cache" in out
    cli("run", f, "--profile", "small", cache=bob)
    assert set(cli.statuses(bob).values()) == {"cached"}


def test_pull_for_a_recipe_with_a_change_says_what_will_run(cli, tmp_path, shared):
    f, url, default, _ = shared
    bob = tmp_path / "bob"
    out = cli("pull", url, "--recipe", f, "--set", "vars.sample=3", cache=bob).stdout
    shared_keys = {n["key"] for n in default["nodes"] if n["label"] in ("load", "text", "split")}
    assert keys_in(bob) == shared_keys
    assert ("3 of 6 step entries are in the cache; 2 are on neither side (they will run); 1 more needs those first"
            in " ".join(out.split())), out


def test_pull_for_a_run_fetches_its_record_and_entries_only(cli, tmp_path, shared):
    _, url, default, small = shared
    bob = tmp_path / "bob"
    out = cli("pull", url, "--run", small["run_id"][:18], cache=bob).stdout
    assert keys_in(bob) == run_keys(cli)  # the last run is small's
    assert [p.stem for p in (bob / "runs").glob("*.json")] == [small["run_id"]]
    assert f"for run {small['run_id']}" in out
    bad = cli("pull", url, "--run", "1999", cache=bob, check=1)
    assert "run '1999' matches no run here or on the remote" in bad.stderr


def test_profile_or_set_without_a_recipe_is_an_error(cli, tmp_path, shared):
    _, url, _, _ = shared
    p = cli("pull", url, "--profile", "small", cache=tmp_path / "bob", check=2)
    assert "--profile and --set choose what `pull --recipe FILE` plans; give --recipe" in p.stderr


def test_pulling_a_prefix_with_nothing_in_it_is_an_error(cli, tmp_path, shared):
    _, url, _, _ = shared
    p = cli("pull", url.replace("remote", "remtoe"), cache=tmp_path / "bob", check=1)
    assert p.stderr.startswith("error: remote file://") and "holds no cache entries and no run records" in p.stderr
    assert not list((tmp_path / "bob").rglob("entry.json"))


_buckets = itertools.count()


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    server = S3Server(tmp_path_factory.mktemp("moto") / "requests.log")
    yield server
    server.stop()


def test_on_s3_a_typod_prefix_fails_and_a_recipe_pull_fetches_only_its_entries(cli, tmp_path, s3):
    bucket = f"team-{next(_buckets)}"
    s3.client().create_bucket(Bucket=bucket)
    cli.env.update(s3.env())
    f = demo(cli)
    cli("run", f)
    cli("run", f, "--profile", "small")
    cli("push", f"s3://{bucket}/cache")
    bob = tmp_path / "bob"
    p = cli("pull", f"s3://{bucket}/cahce", cache=bob, check=1)
    assert f"remote s3://{bucket}/cahce holds no cache entries and no run records" in p.stderr
    cli("pull", f"s3://{bucket}/cache", "--recipe", f, "--profile", "small", cache=bob)
    assert keys_in(bob) == run_keys(cli)
    cli("run", f, "--profile", "small", cache=bob)
    assert set(cli.statuses(bob).values()) == {"cached"}
