"""The team cache on a real S3 server (moto_server on loopback, not a mock of the client),
through s3fs: push, pull into a fresh cache, rerun fully cached; tampered objects refused;
credentials never written down."""
import itertools

import pytest
from _s3 import SECRET, S3Server
from test_engine_cache import demo

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

_buckets = itertools.count()


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("moto") / "requests.log")
    yield server
    server.stop()


@pytest.fixture
def bucket(s3, cli):
    """A fresh bucket, and the CLI's environment pointed at the server."""
    name = f"team-cache-{next(_buckets)}"
    s3.client().create_bucket(Bucket=name)
    cli.env.update(s3.env())
    return name


def objects(s3, bucket, prefix=""):
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_push_to_s3_then_pull_into_a_fresh_cache_and_rerun_computes_nothing(cli, s3, bucket, tmp_path):
    f = demo(cli)
    url = f"s3://{bucket}/cache"
    fresh = tmp_path / "fresh"
    outs = [cli("run", f), cli("push", url), cli("pull", url, cache=fresh), cli("run", f, cache=fresh)]
    assert "pushed 6 entries and 1 run record to" in outs[1].stdout
    keys = objects(s3, bucket)
    assert sum(k.endswith("/entry.json") for k in keys) == 6 and sum(k.startswith("cache/runs/") for k in keys) == 1
    assert "pulled 6 entries and 1 run record from" in outs[2].stdout
    assert set(cli.statuses(fresh).values()) == {"cached"}

    # the credentials s3fs used are in no record, entry, log or output
    written = [p for root in (cli.cache, fresh, cli.artifacts) for p in root.rglob("*") if p.is_file()]
    assert written and not [p for p in written if SECRET.encode() in p.read_bytes()]
    assert not [o for o in outs if SECRET in o.stdout + o.stderr]


def test_pushing_or_pulling_what_is_already_there_moves_nothing(cli, s3, bucket, tmp_path):
    f = demo(cli)
    cli("run", f)
    url = f"s3://{bucket}/cache"
    cli("push", url)
    before = len(s3.requests())
    assert "pushed 0 entries and 0 run records" in cli("push", url).stdout
    again = s3.requests()[before:]
    assert not [r for r in again if r.startswith("PUT")]  # one listing, no uploads
    assert sum("list-type=2" in r for r in again) == 1

    fresh = tmp_path / "fresh"
    cli("pull", url, cache=fresh)
    before = len(s3.requests())
    assert "pulled 0 entries and 0 run records" in cli("pull", url, cache=fresh).stdout
    assert [r for r in s3.requests()[before:] if r.startswith("GET") and "list-type=2" not in r] == []


def test_a_tampered_object_on_s3_is_refused_on_pull_and_the_rest_installed(cli, s3, bucket, tmp_path):
    f = demo(cli)
    cli("run", f)
    url = f"s3://{bucket}/cache"
    cli("push", url)
    data = next(k for k in objects(s3, bucket) if k.endswith(".jsonl"))
    body = s3.client().get_object(Bucket=bucket, Key=data)["Body"].read()
    s3.client().put_object(Bucket=bucket, Key=data, Body=body.replace(b"1", b"7"))

    fresh = tmp_path / "fresh"
    out = cli("pull", url, cache=fresh, check=1).stdout
    assert f"refused {data.split('/')[2][:12]}" in out and "refused 1 tampered entry" in out
    assert "pulled 5 entries" in out
    assert len(list(fresh.rglob("entry.json"))) == 5
    assert not list((fresh / "tmp").iterdir())
    cli("run", f, cache=fresh)  # the refused entry is recomputed, the rest come from the pull
    assert list(cli.statuses(fresh).values()).count("ran") == 1


def test_a_missing_bucket_is_one_error_line_and_is_not_created(cli, s3, bucket):
    out = cli("push", "s3://no-such-bucket/cache", check=1)
    assert out.stderr.startswith("error: remote s3://no-such-bucket/cache: FileNotFoundError")
    assert "Traceback" not in out.stderr and SECRET not in out.stderr
    assert "no-such-bucket" not in {b["Name"] for b in s3.client().list_buckets()["Buckets"]}


def test_an_s3_remote_listing_names_outside_an_entry_is_refused_and_nothing_is_written_there(cli, s3, bucket,
                                                                                              tmp_path):
    """Issue 19 finding 1: objects named cache/57/KEY/../../../../x and cache/57/KEY//tmp/x were
    written outside the cache by `pull`, which said "pulled 1 entries" and exited 0."""
    f = demo(cli)
    cli("run", f)
    url = f"s3://{bucket}/cache"
    cli("push", url)
    dots, absolute = sorted({k.split("/")[2] for k in objects(s3, bucket) if k.endswith("/entry.json")})[:2]
    # staged as fresh/tmp/<folder>/<key>/<name>: four levels up is tmp_path
    s3.client().put_object(Bucket=bucket, Key=f"cache/{dots[:2]}/{dots}/" + "../" * 4 + "escaped-dots", Body=b"x")
    s3.client().put_object(Bucket=bucket, Key=f"cache/{absolute[:2]}/{absolute}/{tmp_path / 'escaped-abs'}", Body=b"x")
    fresh = tmp_path / "fresh"
    out = cli("pull", url, cache=fresh, check=1)
    lines = [line for line in out.stdout.splitlines() if line.startswith("refused ")]
    assert sorted(lines) == sorted([f"refused {dots} from {url}: name '{'../' * 4}escaped-dots' has a '..' component",
                                    f"refused {absolute} from {url}: name '{tmp_path / 'escaped-abs'}' is absolute"])
    assert "pulled 4 entries and 1 run record from" in out.stdout and SECRET not in out.stdout + out.stderr
    assert not (tmp_path / "escaped-dots").exists() and not (tmp_path / "escaped-abs").exists()
    assert not {e.parent.name for e in fresh.rglob("entry.json")} & {dots, absolute}
