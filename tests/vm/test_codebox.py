"""CodeBox against a real kernel in a real VM: state, rich results, errors, faults, timeouts, files, stdin.

One CodeBox is shared by the module (starting a kernel costs seconds under emulation); tests that kill its
kernel come last in their group and leave it restarted.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import boxlite

pytestmark = [pytest.mark.vm, pytest.mark.anyio]


@pytest.fixture(scope="module")
async def cb(runtime: boxlite.Boxlite) -> AsyncIterator[boxlite.CodeBox]:
    async with boxlite.CodeBox(runtime=runtime, memory_mib=768) as codebox:
        yield codebox


async def test_state_persists_and_result_prints_as_text(cb: boxlite.CodeBox) -> None:
    await cb.run("counter = 40")
    result = await cb.run("counter += 2\nprint('counter is', counter)\ncounter")
    assert "".join(result.logs.stdout) == "counter is 42\n"
    assert result.text == "42"
    assert result.error is None
    assert isinstance(result.execution_count, int) and result.execution_count >= 2
    # Upstream BoxLite returned the output text: ours is a str with that text first.
    assert str(result).startswith("counter is 42\n")
    assert "counter is 42" in result


async def test_rich_results_arrive_as_mime_bundles(cb: boxlite.CodeBox) -> None:
    chart = await cb.run("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [3, 1, 2])\nplt.show()")
    png = next(r for r in chart.results if "image/png" in r.formats())
    assert base64.b64decode(png.png).startswith(b"\x89PNG\r\n\x1a\n")

    frame = await cb.run("import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})")
    (table,) = frame.results
    assert table.is_main_result and "<table" in table.html and "text/plain" in table.formats()

    custom = await cb.run(
        "class Both:\n"
        "    def _repr_html_(self): return '<b>bold</b>'\n"
        "    def _repr_svg_(self): return '<svg xmlns=\"http://www.w3.org/2000/svg\"></svg>'\n"
        "Both()"
    )
    (both,) = custom.results
    assert both.html == "<b>bold</b>" and both.svg.startswith("<svg")

    data = await cb.run("from IPython.display import JSON, display\ndisplay(JSON({'k': [1, 2]}))")
    assert data.results[0].json == {"k": [1, 2]} and not data.results[0].is_main_result


async def test_prints_and_displays_keep_their_order(cb: boxlite.CodeBox) -> None:
    seen: list[str] = []
    result = await cb.run(
        "from IPython.display import display, HTML\n"
        "print('one')\ndisplay(HTML('<i>two</i>'))\nprint('three')\ndisplay(HTML('<i>four</i>'))",
        on_stdout=lambda text: seen.append("out:" + text.strip()),
        on_result=lambda r: seen.append("result:" + r.html),
    )
    order = [o.text.strip() if isinstance(o, boxlite._code_results.Stream) else o.html for o in result.outputs]
    assert order == ["one", "<i>two</i>", "three", "<i>four</i>"]
    assert seen == ["out:one", "result:<i>two</i>", "out:three", "result:<i>four</i>"]


async def test_update_display_and_clear_output(cb: boxlite.CodeBox) -> None:
    result = await cb.run(
        "from IPython.display import display, clear_output\n"
        "h = display('first', display_id=True)\nh.update('second')\n"
        "print('gone soon')\nclear_output()\nprint('kept')"
    )
    assert "".join(result.logs.stdout) == "kept\n"
    assert result.results == []
    updated = await cb.run("h2 = display('a', display_id=True)\nh2.update('b')")
    assert [r.text for r in updated.results] == ["'b'"]


async def test_exceptions_and_syntax_errors_are_structured(cb: boxlite.CodeBox) -> None:
    errors: list[boxlite.CodeError] = []
    result = await cb.run("def f():\n    raise ValueError('bad value')\nf()", on_error=errors.append)
    assert result.error is not None and result.error.name == "ValueError" and result.error.value == "bad value"
    assert "raise ValueError('bad value')" in result.error.traceback and "\x1b[" not in result.error.traceback
    assert errors == [result.error]
    assert "ValueError: bad value" in str(result)

    syntax = await cb.run("def broken(:")
    assert syntax.error is not None and syntax.error.name == "SyntaxError"

    exited = await cb.run("import sys\nsys.exit(3)")
    assert exited.error is not None and exited.error.name == "SystemExit"
    assert (await cb.run("counter")).text == "42"  # sys.exit() does not end an IPython kernel


async def test_input_is_answered_from_the_host(cb: boxlite.CodeBox) -> None:
    prompts: list[tuple[str, bool]] = []

    def answer(prompt: str, password: bool) -> str:
        prompts.append((prompt, password))
        return "Ada"

    result = await cb.run("name = input('who? ')\nprint('hello', name)", on_input=answer)
    assert prompts == [("who? ", False)]
    assert "".join(result.logs.stdout).endswith("hello Ada\n")
    refused = await cb.run("input('no handler')")
    assert refused.error is not None and "StdinNotImplemented" in refused.error.name


async def test_timeout_interrupts_and_keeps_state(cb: boxlite.CodeBox) -> None:
    await cb.run("kept = 'still here'")
    with pytest.raises(boxlite.TimeoutError) as info:
        await cb.run("import time\nprint('started', flush=True)\ntime.sleep(60)", timeout=2)
    partial = info.value.execution  # type: ignore[attr-defined]
    assert "".join(partial.logs.stdout) == "started\n"
    assert partial.error is not None and partial.error.name == "KeyboardInterrupt"
    assert (await cb.run("kept")).text == "'still here'"


async def test_interrupt_from_another_task(cb: boxlite.CodeBox) -> None:
    import anyio

    async def interrupt_soon() -> None:
        await anyio.sleep(1.5)
        await cb.interrupt()

    async with anyio.create_task_group() as tg:
        tg.start_soon(interrupt_soon)
        result = await cb.run("import time\ntime.sleep(60)")
    assert result.error is not None and result.error.name == "KeyboardInterrupt"


async def test_huge_output_is_truncated_with_a_marker_and_streamed_whole(runtime: boxlite.Boxlite) -> None:
    received = 0

    def count(text: str) -> None:
        nonlocal received
        received += len(text)

    async with boxlite.CodeBox(runtime=runtime, max_output_bytes=1 << 20) as small:
        result = await small.run("import sys\nfor _ in range(20):\n    sys.stdout.write('x' * (1 << 20))",
                                 on_stdout=count)
        assert received == 20 << 20
        kept = "".join(result.logs.stdout)
        assert len(kept) < (1 << 20) + 500 and "[boxlite: output truncated" in kept
        assert result.truncated_bytes >= 19 << 20
        assert "".join((await small.run("print('after')")).logs.stdout) == "after\n"


async def test_files_write_read_list_and_copy(cb: boxlite.CodeBox, tmp_path: Path) -> None:
    path = await cb.files.write("data/hello.txt", "hi from the host\n")
    assert path.endswith("/data/hello.txt") and path.startswith("/")
    assert "".join((await cb.run("print(open('data/hello.txt').read(), end='')")).logs.stdout) == "hi from the host\n"
    await cb.run("open('data/out.bin', 'wb').write(bytes(range(256)))")
    assert await cb.files.read("data/out.bin") == bytes(range(256))
    entries = {e.name: e for e in await cb.files.list("data")}
    assert entries["hello.txt"].type == "file" and entries["out.bin"].size == 256
    with pytest.raises(boxlite.NotFoundError):
        await cb.files.read("data/missing.txt")
    with pytest.raises(boxlite.ExecutionError):
        await cb.files.read("data")
    await cb.copy_out(path, tmp_path)
    assert (tmp_path / "hello.txt").read_text() == "hi from the host\n"


async def test_restart_gives_a_fresh_interpreter(cb: boxlite.CodeBox) -> None:
    await cb.run("fresh_marker = 1")
    await cb.files.write("survives.txt", "yes")
    await cb.restart()
    result = await cb.run("fresh_marker")
    assert result.error is not None and result.error.name == "NameError"
    assert "".join((await cb.run("print(open('survives.txt').read())")).logs.stdout) == "yes\n"
    await cb.run("counter = 42")


@pytest.mark.parametrize("crash", ["import os\nos._exit(0)", "import ctypes\nctypes.string_at(0)",
                                   "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"])
async def test_a_dying_kernel_is_reported_and_replaced(cb: boxlite.CodeBox, crash: str) -> None:
    await cb.run("before_crash = True")
    result = await cb.run(crash)
    assert result.error is not None and result.error.name == "KernelDied"
    assert "a new kernel was started" in result.error.value
    after = await cb.run("print('alive')\n'before_crash' in globals()")
    assert "".join(after.logs.stdout) == "alive\n" and after.text == "False"


# A cell that catches KeyboardInterrupt for ever (as code stuck in a C call that never checks for signals would).
IGNORES_INTERRUPTS = ("import time\nwhile True:\n    try:\n        time.sleep(60)\n"
                      "    except KeyboardInterrupt:\n        print('caught KeyboardInterrupt', flush=True)")


async def test_a_cell_that_ignores_keyboard_interrupt_gets_a_new_kernel(cb: boxlite.CodeBox) -> None:
    await cb.run("before_timeout = True")
    restarts = cb.kernel_restarts
    with pytest.raises(boxlite.TimeoutError) as info:
        await cb.run(IGNORES_INTERRUPTS, timeout=3)
    assert "did not stop within 5 s of KeyboardInterrupt, so the kernel was restarted" in str(info.value)
    assert info.value.fix
    partial = info.value.execution  # type: ignore[attr-defined]
    assert "".join(partial.logs.stdout) == "caught KeyboardInterrupt\n"  # the interrupt reached the cell
    assert cb.kernel_restarts == restarts + 1
    after = await cb.run("print('alive')\n'before_timeout' in globals()")
    assert "".join(after.logs.stdout) == "alive\n" and after.text == "False" and after.error is None


async def test_out_of_memory_cell_ends_as_an_error(runtime: boxlite.Boxlite) -> None:
    async with boxlite.CodeBox(runtime=runtime, memory_mib=512) as small:
        result = await small.run("chunks = []\nwhile True:\n    chunks.append(bytearray(64 << 20))")
        assert result.error is not None and result.error.name in ("MemoryError", "KernelDied")
        assert (await small.run("1 + 1")).text == "2"


async def test_image_without_ipykernel_names_the_fix(runtime: boxlite.Boxlite) -> None:
    before = {b.id for b in await runtime.list_info()}
    with pytest.raises(boxlite.ExecutionError) as info:
        async with boxlite.CodeBox(boxlite.DEFAULT_IMAGE, runtime=runtime):
            pass
    assert "ipykernel" in str(info.value) and "CODEBOX_IMAGE" in str(info.value)
    assert {b.id for b in await runtime.list_info()} == before  # the box it booted is gone again


async def test_bad_arguments_are_config_errors(cb: boxlite.CodeBox) -> None:
    with pytest.raises(boxlite.ConfigError):
        await cb.run(b"1+1")  # type: ignore[arg-type]
    with pytest.raises(boxlite.ConfigError):
        await cb.run("1", timeout=0)
    with pytest.raises(boxlite.ConfigError):
        await cb.install_packages()


async def test_install_packages_then_import_in_the_running_kernel(cb: boxlite.CodeBox) -> None:
    output = await cb.install_packages("six")
    assert "six" in output
    assert (await cb.run("import six\nsix.__name__")).text == "'six'"
    with pytest.raises(boxlite.ExecError) as info:
        await cb.install_packages("surely-not-a-real-package-name-zz")
    assert "surely-not-a-real-package-name-zz" in info.value.stderr


async def _request(cb: boxlite.CodeBox, channel: str, msg_type: str, content: dict[str, object],
                   until: str | None = None) -> list[boxlite._kernel_client.KernelMessage]:
    """Send a raw request through the bridge client; collect the messages it causes until one of type `until`
    (None: until the kernel is idle again). Watched before it is sent, so nothing it causes is missed."""
    import anyio

    kernel = cb.kernel
    assert kernel.session is not None
    msg = kernel.session.msg(msg_type, content)
    waiter = kernel.watch(msg["header"]["msg_id"])
    got: list[boxlite._kernel_client.KernelMessage] = []

    def done() -> bool:
        if not got:
            return False
        last = got[-1]
        if until is not None:
            return last.msg_type == until
        return last.msg_type == "status" and last.content["execution_state"] == "idle"

    try:
        await kernel.send_msg(channel, msg)
        with anyio.fail_after(60):
            while not done():
                item = await waiter.queue.get()
                assert isinstance(item, boxlite._kernel_client.KernelMessage), item
                got.append(item)
    finally:
        kernel.unwatch(msg["header"]["msg_id"], waiter)
    return got


async def test_raw_protocol_complete_inspect_and_comms_both_ways(cb: boxlite.CodeBox) -> None:
    complete = await _request(cb, "shell", "complete_request", {"code": "import colle", "cursor_pos": 12},
                              "complete_reply")
    assert "collections" in complete[-1].content["matches"]
    inspect = await _request(cb, "shell", "inspect_request", {"code": "len", "cursor_pos": 3, "detail_level": 0},
                             "inspect_reply")
    assert inspect[-1].content["found"] and "text/plain" in inspect[-1].content["data"]
    await cb.run(
        "def _echo(comm, open_msg):\n"
        "    comm.on_msg(lambda msg: comm.send({'echo': msg['content']['data']['value'] * 2}))\n"
        "    comm.send({'opened': open_msg['content']['data']['hello']})\n"
        "get_ipython().kernel.comm_manager.register_target('boxlite-echo', _echo)"
    )
    seen: list[boxlite._kernel_client.KernelMessage] = []

    def listener(message: boxlite._kernel_client.KernelMessage) -> None:
        if message.msg_type == "comm_msg":
            seen.append(message)

    cb.kernel.add_listener(listener)
    try:
        await _request(cb, "shell", "comm_open", {"comm_id": "c1", "target_name": "boxlite-echo",
                                                  "data": {"hello": "from the host"}}, "status")
        await _request(cb, "shell", "comm_msg", {"comm_id": "c1", "data": {"value": 21}}, "status")
        import anyio

        with anyio.fail_after(30):
            while len([m for m in seen if m.content.get("comm_id") == "c1"]) < 2:
                await anyio.sleep(0.05)
    finally:
        cb.kernel.remove_listener(listener)
    data = [m.content["data"] for m in seen if m.content.get("comm_id") == "c1"]
    assert data[:2] == [{"opened": "from the host"}, {"echo": 42}]


async def test_ipywidgets_reach_the_front_end_and_sync_both_ways(cb: boxlite.CodeBox) -> None:
    # ipywidgets 8.1 (protocol 2.1, models 2.0.0: what JupyterLab 4 / jupyterlab_widgets 3 render) next to the
    # image's ipykernel 6.17, matplotlib and pandas.
    versions = await cb.run("import ipywidgets, comm, ipykernel, matplotlib, pandas\n"
                            "ipywidgets.__version__, ipywidgets.__protocol_version__, ipykernel.__version__")
    assert versions.error is None and versions.text is not None
    assert versions.text.startswith("('8.1.") and "'2.1.0'" in versions.text
    iopub: list[boxlite._kernel_client.KernelMessage] = []

    def listener(message: boxlite._kernel_client.KernelMessage) -> None:
        if message.channel == "iopub" and message.msg_type.startswith("comm_"):
            iopub.append(message)

    cb.kernel.add_listener(listener)
    try:
        shown = await cb.run("import ipywidgets as w; s = w.IntSlider(value=3); s")
    finally:
        cb.kernel.remove_listener(listener)
    assert shown.error is None
    opened = [m for m in iopub if m.msg_type == "comm_open" and m.content["target_name"] == "jupyter.widget"]
    slider = next(m.content for m in opened if m.content["data"]["state"]["_model_name"] == "IntSliderModel")
    state = slider["data"]["state"]
    assert state["_model_module"] == "@jupyter-widgets/controls" and state["_model_module_version"] == "2.0.0"
    assert state["value"] == 3
    view = next(r for r in shown.results if "application/vnd.jupyter.widget-view+json" in r.formats())
    assert view.is_main_result  # the cell's value: an execute_result
    assert view.data["application/vnd.jupyter.widget-view+json"]["model_id"] == slider["comm_id"]
    displayed = await cb.run("from IPython.display import display; display(s)")  # a display_data
    (again,) = displayed.results
    assert not again.is_main_result
    assert again.data["application/vnd.jupyter.widget-view+json"] == {"version_major": 2, "version_minor": 0,
                                                                       "model_id": slider["comm_id"]}

    # The front end moves the slider: a comm_msg on shell, as JupyterLab sends it.
    await cb.run("s.observe(lambda change: print('value', change['old'], '->', change['new']), names='value')")
    update = {"comm_id": slider["comm_id"], "data": {"method": "update", "state": {"value": 7}, "buffer_paths": []}}
    caused = await _request(cb, "shell", "comm_msg", update)
    printed = "".join(m.content["text"] for m in caused if m.msg_type == "stream")
    assert printed == "value 3 -> 7\n"
    assert (await cb.run("s.value")).text == "7"
    # and the box moves it: the front end is told
    moved = await cb.run("s.value = 9")
    assert "".join(moved.logs.stdout) == "value 7 -> 9\n"

    # A library using the `comm` package directly also reaches the front end (the kernel launcher's doing,
    # ipykernel 6.17 predating `comm`), and the front end's messages reach it.
    iopub.clear()
    cb.kernel.add_listener(listener)
    try:
        await cb.run("import comm\nraw = comm.create_comm(target_name='boxlite-raw', data={'hello': 1})\n"
                     "got = []\nraw.on_msg(lambda msg: got.append(msg['content']['data']))\n"
                     "type(raw).__module__")
    finally:
        cb.kernel.remove_listener(listener)
    raw = next(m.content for m in iopub if m.msg_type == "comm_open")
    assert raw["target_name"] == "boxlite-raw" and raw["data"] == {"hello": 1}
    await _request(cb, "shell", "comm_msg", {"comm_id": raw["comm_id"], "data": {"k": "v"}})
    assert (await cb.run("got")).text == "[{'k': 'v'}]"


async def test_kernel_runs_as_the_boxs_user_in_its_working_dir(runtime: boxlite.Boxlite) -> None:
    async with boxlite.CodeBox(runtime=runtime, user="nobody", working_dir="/tmp") as other:
        result = await other.run("import os, pwd\nos.getuid(), os.getcwd(), pwd.getpwuid(os.getuid()).pw_name")
        assert result.text == "(65534, '/tmp', 'nobody')"
        assert other.workdir == "/tmp"
        await other.run("open('mine.txt', 'w').write('by nobody')")
        assert await other.files.read("mine.txt") == b"by nobody"


async def test_codeboxes_restore_from_a_template_with_their_kernel_running(runtime: boxlite.Boxlite,
                                                                           cb: boxlite.CodeBox) -> None:
    # `cb` (same options) has left the template: its kernel was started before the snapshot was taken.
    await cb.run("secret = 'only in cb'")
    values = []
    for _ in range(2):
        async with boxlite.CodeBox(runtime=runtime, memory_mib=768) as clone:
            assert clone.box.info().boot == "restored"
            assert clone.kernel.info is not None and not clone.kernel.info.started  # it came with the snapshot
            result = await clone.run("import random\n('secret' in globals(), random.random())")
            values.append(result.text)
    assert all(v is not None and v.startswith("(False, ") for v in values)
    assert values[0] != values[1]  # each clone's kernel reseeded its own random state


# -- file calls with bad input: BoxliteErrors with a fix -------------------------------------------------------
async def test_write_refuses_content_that_is_not_bytes_or_text(cb: boxlite.CodeBox) -> None:
    with pytest.raises(boxlite.ConfigError) as info:
        await cb.files.write("five.bin", 5)  # type: ignore[arg-type]
    assert info.value.fix
    # Nothing was written (bytes(5) would have made a file of five zero bytes).
    with pytest.raises(boxlite.NotFoundError):
        await cb.files.read("five.bin")


async def test_reading_binary_as_text_is_a_parse_error(cb: boxlite.CodeBox) -> None:
    path = await cb.files.write("binary.bin", b"\xff\xfe\x00 not utf-8")
    with pytest.raises(boxlite.ParseError) as info:
        await cb.files.read("binary.bin", text=True)
    assert path in info.value.detail and info.value.fix and "text=False" in info.value.fix
    assert await cb.files.read("binary.bin") == b"\xff\xfe\x00 not utf-8"
