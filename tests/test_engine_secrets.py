"""A secret given through the environment never lands in a key, record, entry, log or error."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

from conftest import write

TOKEN = "hf_TopSecretValue12345"


def all_text(folder):
    return "".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file() and p.suffix != ".lock"
                   and "index" not in p.parts)


def test_secret_is_redacted_everywhere(cli):
    cli.env["MR_TEST_TOKEN"] = TOKEN
    f = write(cli.tmp / "s.yaml", "recipe: s\nsteps:\n  - id: s\n    uses: test.secret\n")
    out = cli("run", f.name)
    assert TOKEN not in out.stdout + out.stderr
    assert TOKEN not in all_text(cli.cache) and TOKEN not in all_text(cli.artifacts)
    log = next(cli.cache.rglob("log.txt")).read_text()
    assert "authenticating with token ***" in log
    # the value changes, the key does not: secrets are not part of keys
    key = cli.last_run()["nodes"][0]["key"]
    cli.env["MR_TEST_TOKEN"] = TOKEN + "x"
    cli("run", f.name)
    assert cli.last_run()["nodes"][0]["key"] == key


def test_secret_in_a_failure_message_is_redacted(cli):
    cli.env["MR_TEST_TOKEN"] = TOKEN
    f = write(cli.tmp / "s.yaml", "recipe: s\nsteps:\n  - id: s\n    uses: test.secret\n    with: {fail: true}\n")
    out = cli("run", f.name, check=1)
    assert "the server refused token ***" in out.stdout
    assert TOKEN not in out.stdout + out.stderr + all_text(cli.cache)
    assert not list(cli.cache.rglob("entry.json"))


def test_missing_secret_is_a_clear_step_failure(cli):
    cli.env.pop("MR_TEST_TOKEN", None)
    cli.env["RECIPE_KEYS_FILE"] = str(cli.tmp / "keys")
    f = write(cli.tmp / "s.yaml", "recipe: s\nsteps:\n  - id: s\n    uses: test.secret\n")
    out = cli("run", f.name, check=1)
    assert "secret MR_TEST_TOKEN is not set" in out.stdout
    write(cli.tmp / "keys", f"MR_TEST_TOKEN={TOKEN}\n")
    out = cli("run", f.name)
    assert TOKEN not in out.stdout + all_text(cli.cache)


def test_token_shaped_strings_are_scrubbed_whoever_owns_them():
    """Issue 19: tokens the engine was never told about still leave no 8 characters behind."""
    from engine.cache.secrets import Redactor

    text = ("401: bad key sk-proj-Abc123def456ghi for hf_AbCdEfGhIjKlMnOp; sent 'Authorization: Bearer "
            "eyJhbGciOi.J9.x-y_z'; task-abcdefghijkl and hf_short stay")
    assert Redactor().scrub(text) == ("401: bad key sk-*** for hf_***; sent 'Authorization: Bearer ***'; "
                                      "task-abcdefghijkl and hf_short stay")


def test_a_secret_read_in_a_process_is_scrubbed_by_every_redactor_there(monkeypatch, tmp_path):
    from engine.cache.secrets import Redactor, read_secret

    monkeypatch.delenv("MR_TEST_TOKEN", raising=False)
    monkeypatch.setenv("RECIPE_KEYS_FILE", str(write(tmp_path / "keys", "MR_TEST_TOKEN=from-the-keys-file-42\n")))
    earlier = Redactor()  # made before the secret was read, as the step's log handler is
    assert read_secret("MR_TEST_TOKEN") == "from-the-keys-file-42"
    assert earlier.scrub("got from-the-keys-file-42 back") == "got *** back"


def test_a_secret_given_with_set_is_scrubbed_from_run_records_the_fast_paths_too(cli):
    secret = "plain-secret-value-42"  # no token shape: known only as the value of MR_TEST_TOKEN
    cli.env["MR_TEST_TOKEN"] = secret
    f = write(cli.tmp / "s.yaml", "recipe: s\nvars: {note: none}\nsteps:\n  - id: s\n    uses: test.squares\n"
                                  "    with: {n: 2}\n")
    for _ in range(2):
        out = cli("run", f.name, "--set", f"vars.note={secret}")
        assert secret not in out.stdout + out.stderr
    assert cli.last_run()["fast_path"] and len(list((cli.cache / "runs").glob("*.json"))) == 2
    for record in [*(cli.cache / "runs").glob("*.json"), *(cli.cache / "index" / "fastpath").iterdir()]:
        assert secret not in record.read_text(), f"{record.name} holds the secret"
    assert cli.last_run()["sets"] == ["vars.note=***"] and cli.last_run()["vars"] == {"note": "***"}


CRASHING_STEP = '''
from engine.recipe.artifact_types import Dataset
from engine.recipe.step import Step, StepConfig, register


@register("test.crash_with_key")
class CrashWithKey(Step):
    """A library error that echoes the request URL, key and all, under an error of its own."""

    version = "1"

    class Config(StepConfig):
        pass

    outputs = {"data": Dataset}

    def run(self, ctx) -> None:
        key = ctx.secret("MR_TEST_TOKEN")
        try:
            raise ConnectionError(f"GET http://127.0.0.1:9/v1/models?api_key={key} refused")
        except ConnectionError as e:
            raise RuntimeError("request failed") from e
'''


def test_a_secret_in_a_traceback_is_scrubbed_from_the_step_log(cli):
    """The log's filter scrubbed the record's message, not its traceback: an unexpected error's
    chained exception put the key, whole, into cache/failed/<key>.log and the log tail on stdout."""
    from conftest import add_step_module

    secret = "plain-secret-value-42xyz"  # no token shape: known only as what the step read
    cli.env["MR_TEST_TOKEN"] = secret
    add_step_module(cli, "crash_steps", CRASHING_STEP)
    f = write(cli.tmp / "c.yaml", "recipe: c\nsteps:\n  - id: c\n    uses: test.crash_with_key\n")
    out = cli("run", f.name, check=1)
    assert "ConnectionError: GET http://127.0.0.1:9/v1/models?api_key=*** refused" in out.stdout
    pieces = {secret[i:i + 8] for i in range(len(secret) - 7)}
    text = out.stdout + out.stderr + all_text(cli.cache)
    assert not [p for p in pieces if p in text]
    assert not list(cli.cache.rglob("entry.json"))


class _EchoingHub(BaseHTTPRequestHandler):
    """A Hub that refuses every request and echoes the token back, as is and percent-encoded."""

    def do_GET(self):
        token = self.headers.get("Authorization", "").split(" ", 1)[-1]
        body = json.dumps({"error": f"token {token} (in a URL: ?token={quote(token, safe='')}) is not valid; "
                                    f"as JSON: {json.dumps(token)}"}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_token_the_hub_echoes_percent_encoded_leaves_no_8_characters(cli):
    """A token with `/`, `+` or `=` (an S3 secret key has them) echoed in a URL is percent-encoded:
    the redactor replaced only the token as is, so `ABCDEFGH12345xyz` reached the failed log, the
    run record and stdout. The real Hub client against a real local server."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoingHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    token = "plain/hub+token=ABCDEFGH12345xyz"
    cli.env.update(HF_TOKEN=token, HF_ENDPOINT=f"http://127.0.0.1:{server.server_port}", HF_HUB_OFFLINE="0")
    f = write(cli.tmp / "h.yaml", "recipe: h\nsteps:\n  - id: load\n    uses: data.load\n"
                                  "    with: {hub: someone/data, split: train}\n")
    try:
        out = cli("run", f.name, check=1)
    finally:
        server.shutdown()
    assert "401" in out.stdout and "token *** (in a URL: ?token=***) is not valid" in out.stdout
    pieces = {token[i:i + 8] for i in range(len(token) - 7)}
    text = out.stdout + out.stderr + all_text(cli.cache)
    assert not [p for p in pieces if p in text]


def test_a_secret_astride_the_64_kb_cut_of_a_commands_long_line_is_scrubbed(tmp_path):
    """A command's output is read 64 KB at a time: a longer line was scrubbed piece by piece, so a
    secret across a cut reached the step log whole, in two halves."""
    import logging
    import sys

    from engine.run.capture import captured, run_logged

    secret = "key-ABCDEFGH12345678"
    line = "word " * (65530 // 5) + "at " + secret + " end\n"
    assert line.index(secret) < 1 << 16 < line.index(secret) + len(secret)  # astride the first cut
    log = tmp_path / "log.txt"
    with captured(logging.getLogger("t"), log, scrub=lambda text: text.replace(secret, "***")):
        assert run_logged([sys.executable, "-c", f"import sys; sys.stdout.write({line!r})"]) == 0
    assert log.read_text() == line.replace(secret, "***")


def test_ray_keeps_only_a_function_holding_a_secret_of_six_characters_or_more(monkeypatch):
    """A value of a secret-named variable shorter than 6 characters (`PAGE_KEY=12345`) is found in
    ordinary data by chance: it made every shard function run in the step's task. A real one is
    named (not shown) in the reason."""
    from engine.cache.secrets import read_secret
    from engine.run.executors.ray import _shipped

    monkeypatch.setenv("PAGE_KEY", "12345")
    monkeypatch.setenv("SHORT_TOKEN", "abcde")
    read_secret("SHORT_TOKEN")
    data = {"page": "12345", "text": "abcde"}
    assert _shipped(lambda: data, "the shard function")[1] is None
    monkeypatch.setenv("LONGER_TOKEN", "abcdef-123")
    data["token"] = read_secret("LONGER_TOKEN")
    _, why = _shipped(lambda: data, "the shard function")
    assert why == ("the shard function holds a secret this process knows (LONGER_TOKEN's value; it stays out of "
                   "Ray's object store)")
