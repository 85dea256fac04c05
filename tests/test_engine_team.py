"""Team-safe files: entries honour the umask (0644/0755 under 022, like pulled ones), and a
cache set `shared group` is group-writable with setgid folders, like git's core.sharedRepository."""
import os
import stat

from conftest import add_step_module, write

STEP = '''
import os
import tempfile
from engine.recipe.artifact_types import Dataset
from engine.recipe.step import Step, register


@register("perm.private")
class Private(Step):
    """Writes a file the way some libraries do: mkstemp (0600), then renamed into place."""

    outputs = {"data": Dataset}

    def run(self, ctx):
        out = ctx.out("data")
        fd, tmp = tempfile.mkstemp(dir=out)
        os.write(fd, b'{"x": 1}\\n')
        os.close(fd)
        os.rename(tmp, out / "data.jsonl")
'''


def project(cli):
    add_step_module(cli, "perm_steps", STEP)
    return str(write(cli.tmp / "perm.yaml", "recipe: perm\nsteps:\n  - id: p\n    uses: perm.private\n  - id: copy\n"
                                           "    uses: test.count\n    inputs: {data: '${steps.p.data}'}\n"))


def modes(folder):
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in [dirpath] + [os.path.join(dirpath, f) for f in filenames]:
            out[os.path.relpath(name, folder)] = stat.S_IMODE(os.lstat(name).st_mode)
    return out


def umask(mask):
    return lambda: os.umask(mask)


def test_entries_are_made_with_the_umask(cli):
    cli("run", project(cli), preexec_fn=umask(0o022))
    for node in cli.last_run()["nodes"]:
        folder = cli.cache / node["key"][:2] / node["key"]
        found = modes(folder)
        assert {m for p, m in found.items() if (folder / p).is_dir()} == {0o755}, found
        assert {m for p, m in found.items() if (folder / p).is_file()} == {0o644}, found


def test_a_shared_cache_is_group_writable_with_setgid_folders(cli):
    f = project(cli)
    cli("run", f, preexec_fn=umask(0o022))
    old = cli.last_run()["nodes"][0]["key"]
    out = cli("config", "shared", "group", preexec_fn=umask(0o022)).stdout
    assert "shared = group" in out and "paths made group-writable" in out
    assert "shared = group" in cli("config", "shared").stdout
    recipe = cli.tmp / "perm.yaml"
    write(recipe, recipe.read_text().replace("test.count", "test.count\n    with: {tag: b}"))  # a new entry
    cli("run", f, preexec_fn=umask(0o022))
    new = cli.last_run()["nodes"][1]["key"]
    for key in (old, new):  # made before the setting and after it
        folder = cli.cache / key[:2] / key
        found = modes(folder)
        assert {m for p, m in found.items() if (folder / p).is_dir()} == {0o2775}, found
        assert {m for p, m in found.items() if (folder / p).is_file()} == {0o664}, found
    for shared_file in ("locks/keys.lock", "index/stat/cache.db", "index/steps/cache.db"):
        assert os.stat(cli.cache / shared_file).st_mode & 0o060 == 0o060, shared_file
    assert os.stat(cli.cache).st_mode & stat.S_ISGID
