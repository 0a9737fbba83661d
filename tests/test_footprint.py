"""What every process loads: libraries only some requests need are imported when the first such
request comes, not with the app (README "Memory": each MB in the app costs one MB per process).

Each check runs in a fresh interpreter: this test process has imported everything already.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_fresh(code: str, tmp_path) -> str:
    """Run `code` in a new interpreter at the checkout; its stdout (fails on any error)."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True,
        timeout=120, env={"PATH": "/usr/bin:/bin", "CACHE_DIR": str(tmp_path / "cache"),
                          "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_jsonschema_is_loaded_by_the_first_schema_not_by_the_app(tmp_path):
    out = run_fresh("""
        import sys
        from chatgpt_web import create_app
        create_app()
        print("after app:", "jsonschema" in sys.modules)
        from chatgpt_web.api.model_json import check_schema, schema_problem
        print("bad schema:", check_schema({"type": "no-such-type"}) is not None)
        print("after schema:", "jsonschema" in sys.modules)
        print("problem:", schema_problem({"n": "x"}, {"properties": {"n": {"type": "integer"}}}))
    """, tmp_path)
    assert "after app: False" in out
    assert "bad schema: True" in out
    assert "after schema: True" in out
    assert "problem: at /n: 'x' is not of type 'integer'" in out


def test_a_workers_collection_leaves_the_masters_pages_shared(tmp_path):
    """gunicorn_config.pre_fork freezes the master's objects: a forked worker's full collection
    then does not visit them, so it copies (dirties) almost none of the pages it shares with the
    master. Measured on a fork before the hook ran and on one after it, in one interpreter."""
    out = run_fresh("""
        import gc, os, re
        from chatgpt_web import create_app
        from chatgpt_web import gunicorn_config

        create_app()

        def private_dirty_kb():
            with open("/proc/self/smaps_rollup") as rollup:
                return int(re.search(r"Private_Dirty:\\s+(\\d+)", rollup.read()).group(1))

        def copied_by_collection_in_child():
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:
                before = private_dirty_kb()
                gc.collect()
                os.write(write, str(private_dirty_kb() - before).encode())
                os._exit(0)
            os.waitpid(pid, 0)
            return int(os.read(read, 64))

        print("unfrozen:", copied_by_collection_in_child())
        gunicorn_config.pre_fork(None, None)
        print("frozen:", copied_by_collection_in_child())
    """, tmp_path)
    copied = dict(line.split(": ") for line in out.splitlines())
    unfrozen, frozen = int(copied["unfrozen"]), int(copied["frozen"])
    assert unfrozen > 4000  # KB: the collection really visits the app's objects (~17 MB here)
    assert frozen < unfrozen / 4, copied
