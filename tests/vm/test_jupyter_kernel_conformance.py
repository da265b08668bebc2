"""jupyter_kernel_test's conformance suite against the BoxLite Python kernel: every check it offers that
applies to a Python kernel, through a real jupyter_client, with the cells running in a real box."""

from __future__ import annotations

import jupyter_kernel_test as jkt
import pytest

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.usefixtures("kernelspec")]


# The first cell waits for the box (a cold boot and a start template, in the tests' fresh home): longer than the
# suite's 15 s per request, after which every later test would read the replies meant for earlier ones.
FIRST_CELL_TIMEOUT = 300


class TestBoxLitePython(jkt.KernelTests):
    kernel_name = "boxlite-python"
    language_name = "python"
    file_extension = ".py"

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        reply = cls.kc.execute_interactive("pass", timeout=FIRST_CELL_TIMEOUT, output_hook=lambda _msg: None)
        assert reply["content"]["status"] == "ok", reply["content"]

    code_hello_world = "print('hello, world')"
    code_stderr = "import sys; print('test', file=sys.stderr)"
    completion_samples = [{"text": "zi", "matches": {"zip"}}]  # noqa: RUF012
    complete_code_samples = ["1", "print('hello, world')", "def f(x):\n  return x*2\n\n\n"]  # noqa: RUF012
    incomplete_code_samples = ["print('''hello", "def f(x):\n  x*2"]  # noqa: RUF012
    invalid_code_samples = ["import = 7q"]  # noqa: RUF012
    code_page_something = "zip?"
    code_generate_error = "raise ValueError('boom')"
    code_execute_result = [{"code": "1+2+3", "result": "6"}, {"code": "[n*n for n in range(4)]",  # noqa: RUF012
                                                                  "result": "[0, 1, 4, 9]"}]
    code_display_data = [  # noqa: RUF012
        {"code": "from IPython.display import HTML, display; display(HTML('<b>test</b>'))", "mime": "text/html"},
        {"code": "from IPython.display import Math, display; display(Math('\\\\frac{1}{2}'))", "mime": "text/latex"},
    ]
    code_history_pattern = "1?2*"
    supported_history_operations = ("tail", "range", "search")
    code_inspect_sample = "zip"
    code_clear_output = "from IPython.display import clear_output; clear_output()"


class TestBoxLitePythonIopubWelcome(jkt.IopubWelcomeTests):
    kernel_name = "boxlite-python"
    support_iopub_welcome = True
