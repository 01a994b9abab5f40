"""The camera-loop commands that run on the device (capture, compare, run --watch/--collect) import no torch."""

import textwrap

from tests.install.test_torch_free import _python, torch_free_env  # noqa: F401  (the fixture)


def test_capture_watch_collect_and_compare_import_without_torch(torch_free_env):  # noqa: F811
    code = textwrap.dedent('''
        import sys
        import uda_adapt.runtime.capture_set, uda_adapt.runtime.collect, uda_adapt.runtime.watch, uda_adapt.runtime.compare, uda_adapt.runtime.stream, uda_adapt.common.label_free
        import uda_adapt.cli.data, uda_adapt.cli.compare
        assert "torch" not in sys.modules, "torch was imported"
        print("ok")
    ''')
    result = _python(torch_free_env, code)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
