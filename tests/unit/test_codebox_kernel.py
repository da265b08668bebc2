"""The BoxLite Python kernel's own logic, without a box: `%boxlite` parsing, settings, error replies, install."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import boxlite
from codebox_kernel import commands
from codebox_kernel.errors import error_content, reply_type
from codebox_kernel.install import install
from codebox_kernel.install import main as install_main
from codebox_kernel.notebook_box import default_box_name
from codebox_kernel.settings import load_settings


def test_only_cells_made_of_boxlite_lines_are_the_hosts() -> None:
    assert commands.parse("%boxlite info") == [["info"]]
    assert commands.parse("# about the box\n%boxlite info\n\n%boxlite files /tmp") == [["info"], ["files", "/tmp"]]
    assert commands.parse("%boxlite info\nprint(1)") is None
    assert commands.parse("print(1)") is None
    assert commands.parse("%boxlitex") is None
    assert commands.parse("") is None
    assert commands.parse("%boxlite files 'a b'") == [["files", "a b"]]


def test_settings_come_from_the_kernelspec_then_the_environment(tmp_path: Path) -> None:
    (tmp_path / "kernel.json").write_text(json.dumps({"metadata": {"boxlite": {"cpus": 2, "memory_mib": 1024}}}))
    settings = load_settings(tmp_path, environ={"BOXLITE_KERNEL_MEMORY_MIB": "768", "BOXLITE_KERNEL_METRICS": "1"})
    assert (settings.cpus, settings.memory_mib, settings.metrics, settings.persist) == (2, 768, True, False)
    assert settings.box_options() == {"cpus": 2, "memory_mib": 768}


@pytest.mark.parametrize("environ", [{"BOXLITE_KERNEL_CPUS": "many"}, {"BOXLITE_KERNEL_TIMEOUT": "-1"},
                                     {"BOXLITE_KERNEL_PERSIST": "perhaps"}, {"BOXLITE_KERNEL_BOX_NAME": "no/slash"},
                                     {"BOXLITE_KERNEL_MEMORY_MIB": "1"}])
def test_bad_settings_are_config_errors(environ: dict[str, str]) -> None:
    with pytest.raises(boxlite.ConfigError):
        load_settings(None, environ=environ)


def test_unreadable_kernelspec_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "kernel.json").write_text("{not json")
    with pytest.raises(boxlite.ConfigError, match="kernelspec"):
        load_settings(tmp_path, environ={})


def test_errors_are_named_by_their_public_class() -> None:
    from boxlite.images.registry import RegistryUnreachableError

    content = error_content(RegistryUnreachableError("cannot reach registry x", fix="check the network"))
    assert content["ename"] == "ImageError"
    plain = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(content["traceback"]))
    assert "boxlite.errors.ImageError: image error: cannot reach registry x (fix: check the network)" in plain
    assert error_content(ValueError("bug"))["ename"] == "InternalError"
    assert reply_type("execute_request") == "execute_reply"


def test_install_writes_a_kernelspec_with_the_box_settings(tmp_path: Path) -> None:
    assert install_main(["--prefix", str(tmp_path), "--cpus", "2", "--timeout", "30", "--name", "bx"]) == 0
    spec = json.loads((tmp_path / "share/jupyter/kernels/bx/kernel.json").read_text())
    assert spec["display_name"] == "BoxLite Python" and spec["interrupt_mode"] == "signal"
    assert spec["argv"][1:4] == ["-m", "codebox_kernel", "-f"] and "{resource_dir}" in spec["argv"]
    assert spec["metadata"]["boxlite"] == {"cpus": 2, "timeout": 30.0}
    assert install_main(["--prefix", str(tmp_path), "--memory", "3"]) == 2  # refused before writing anything
    with pytest.raises(boxlite.ConfigError):
        install(prefix=str(tmp_path), box={"cpus": "lots"})


def test_box_name_follows_the_connection_file(tmp_path: Path) -> None:
    a = default_box_name(str(tmp_path / "kernel-1.json"))
    assert a == default_box_name(str(tmp_path / "kernel-1.json")) != default_box_name(str(tmp_path / "k2.json"))
    boxlite.BoxOptions(name=a)
