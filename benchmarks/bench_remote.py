"""Team cache on a real S3 server (moto_server on loopback): push of 100 entries to an empty
prefix, a push that finds everything there, pull of 100 entries into an empty cache, a pull
that finds everything here. Each records the S3 requests it made.
Run: python -m pytest benchmarks/bench_remote.py --benchmark-only
     --benchmark-json benchmarks/results/remote.json"""
import itertools
import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from _s3 import S3Server
from bench_engine import workdir as cache_of_100_entries  # noqa: F401 - a fixture, used by name

pytest.importorskip("s3fs")
_prefixes = itertools.count()


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("moto") / "requests.log")
    os.environ.update(server.env())
    server.client().create_bucket(Bucket="bench")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def store(request):
    """bench_engine's cache: 100 real entries (one load and 99 samples of it)."""
    from engine.cache.store import Store

    return Store(request.getfixturevalue("cache_of_100_entries") / "cache")


def measured(benchmark, s3, fn, setup, rounds=3):
    before = len(s3.requests())
    benchmark.pedantic(fn, setup=setup, rounds=rounds)
    benchmark.extra_info["s3_requests_per_round"] = (len(s3.requests()) - before) // rounds


def test_push_100_entries_to_an_empty_prefix(benchmark, s3, store):
    from engine.cache.remote import push

    def setup():
        return (store, f"s3://bench/push-{next(_prefixes)}"), {}
    measured(benchmark, s3, push, setup)


def test_push_when_everything_is_there(benchmark, s3, store):
    from engine.cache.remote import push

    push(store, "s3://bench/full")
    measured(benchmark, s3, push, lambda: ((store, "s3://bench/full"), {}))


def test_pull_100_entries_into_an_empty_cache(benchmark, s3, store, tmp_path):
    from engine.cache.remote import pull, push
    from engine.cache.store import Store

    push(store, "s3://bench/pull")
    fresh = tmp_path / "fresh"

    def setup():
        shutil.rmtree(fresh, ignore_errors=True)
        return (Store(fresh), "s3://bench/pull"), {}
    measured(benchmark, s3, pull, setup)


def test_pull_when_everything_is_here(benchmark, s3, store, tmp_path):
    from engine.cache.remote import pull, push
    from engine.cache.store import Store

    push(store, "s3://bench/here")
    pull(Store(tmp_path / "here"), "s3://bench/here")
    measured(benchmark, s3, pull, lambda: ((Store(tmp_path / "here"), "s3://bench/here"), {}))
