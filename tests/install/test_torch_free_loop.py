"""The camera-loop commands that run on the device (capture, compare, run --watch/--collect) import no torch."""

import textwrap

from tests.install.test_torch_free import _python, torch_free_env  # noqa: F401  (the fixture)


def test_capture_watch_collect_and_compare_import_without_torch(torch_free_env):  # noqa: F811
    code = textwrap.dedent('''
        import sys
        import runtime.capture_set, runtime.collect, runtime.watch, runtime.compare, runtime.stream, common.label_free
        import cli.data, cli.compare
        assert "torch" not in sys.modules, "torch was imported"
        print("ok")
    ''')
    result = _python(torch_free_env, code)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
