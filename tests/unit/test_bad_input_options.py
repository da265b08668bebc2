"""Property tests: any value given to BoxOptions / Options either constructs or raises ConfigError.

Never a TypeError, OverflowError, ValueError, RuntimeError or pydantic's ValidationError, whatever the input:
JSON-ish values, huge and negative ints, NaN and infinities, wrong types, unicode, NUL bytes, lone surrogates.
"""

from __future__ import annotations

import contextlib
import math
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from boxlite import BoxOptions, ConfigError, Options
from boxlite._options import check_text

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

BOX_FIELDS = sorted(BoxOptions.model_fields)
OPTION_FIELDS = sorted(Options.model_fields)

# Text with what tends to break things: NUL, lone surrogates, path and reference punctuation, non-ASCII.
nasty_text = st.text(
    alphabet=st.one_of(st.characters(codec=None), st.sampled_from("\0/:@.-_~ =\t\n\udc80\ud800é中")), max_size=40)
# Built by a function: hypothesis itself cannot repr a 5000-digit literal (Python's int-to-str limit).
huge_ints = st.sampled_from([(10, 5000), (-10, 5001), (2, 63), (-2, 63), (2, 1024), (10, 400)]).map(
    lambda base_exp: base_exp[0] ** base_exp[1])
numbers = st.one_of(st.integers(), huge_ints, st.floats(allow_nan=True, allow_infinity=True))
scalars = st.one_of(st.none(), st.booleans(), numbers, nasty_text, st.binary(max_size=20))
json_ish = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.tuples(children, children),
                               st.dictionaries(st.one_of(nasty_text, st.integers()), children, max_size=4)),
    max_leaves=10,
)


def _field_values(name: str) -> st.SearchStrategy[Any]:
    """Plausible values for `name`, and everything else."""
    special: dict[str, st.SearchStrategy[Any]] = {
        "cpus": st.one_of(st.integers(-3, 5), numbers),
        "memory_mib": st.one_of(st.integers(100, 70000), numbers),
        "disk_size_gb": numbers,
        "env": st.one_of(st.dictionaries(nasty_text, nasty_text, max_size=3),
                         st.lists(st.tuples(nasty_text, nasty_text), max_size=3),
                         st.lists(st.lists(scalars, max_size=3), max_size=3)),
        "image": st.one_of(nasty_text, st.sampled_from(["alpine", "python:3.12-slim", "oci-layout:/x",
                                                        "archive:", "sha256:" + "a" * 64, "a" * 300])),
        "entrypoint": st.lists(nasty_text, max_size=3),
        "cmd": st.lists(st.one_of(nasty_text, scalars), max_size=3),
        "boot_timeout_s": numbers,
        "network": st.one_of(st.sampled_from(["enabled", "disabled", "", "none"]),
                             st.fixed_dictionaries({"mode": nasty_text,
                                                    "allow_net": st.lists(nasty_text, max_size=2)})),
        "ports": st.lists(st.one_of(st.tuples(numbers, numbers, nasty_text), st.tuples(numbers, numbers),
                                    nasty_text, st.sampled_from(["8080:80", "127.0.0.1:8080:80/tcp", "1:2/udp"])),
                          max_size=3),
        "volumes": st.lists(st.one_of(st.tuples(nasty_text, nasty_text, nasty_text), st.tuples(nasty_text, nasty_text),
                                      nasty_text, st.sampled_from(["/tmp:/data", "/tmp:/data:ro", "/:/x", "/tmp:rel"])),
                            max_size=3),
        "accel": st.one_of(st.sampled_from(["auto", "kvm", "tcg", "KVM", ""]), scalars),
        "home_dir": st.one_of(nasty_text, st.sampled_from(["~", "~nosuchuser-xyz/box", "/tmp/x\0y"])),
        "image_registries": st.lists(st.one_of(
            nasty_text, st.fixed_dictionaries({"host": nasty_text}),
            st.fixed_dictionaries({"host": st.just("docker.io"), "mirrors": st.lists(nasty_text, max_size=2)}),
        ), max_size=2),
    }
    if name in special:
        return st.one_of(special[name], json_ish)
    return json_ish


def _options_dict(fields: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.one_of(st.sampled_from(fields), st.text(string.ascii_lowercase, max_size=8)),
                           st.none(), max_size=4).flatmap(
        lambda keys: st.fixed_dictionaries({k: _field_values(k) for k in keys}))


def _constructs_or_config_error(model: type[Any], values: dict[str, Any]) -> None:
    try:
        model(**values)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("configuration error: ")
        assert exc.fix
        # The message quotes the bad value, but never all of a huge one.
        assert len(message) < 2000, len(message)


@SETTINGS
@given(_options_dict(BOX_FIELDS))
def test_box_options_construct_or_raise_config_error(values: dict[str, Any]) -> None:
    _constructs_or_config_error(BoxOptions, values)


@SETTINGS
@given(_options_dict(OPTION_FIELDS))
def test_runtime_options_construct_or_raise_config_error(values: dict[str, Any]) -> None:
    _constructs_or_config_error(Options, values)


@SETTINGS
@given(st.sampled_from(BOX_FIELDS), st.data())
def test_assigning_a_field_validates_it(name: str, data: st.DataObject) -> None:
    opts = BoxOptions()
    value = data.draw(_field_values(name))
    with contextlib.suppress(ConfigError):
        setattr(opts, name, value)


@SETTINGS
@given(_options_dict(BOX_FIELDS))
def test_what_constructs_is_safe_to_send_into_the_box(values: dict[str, Any]) -> None:
    """Accepted options hold no text the portal or the guest's execve would choke on."""
    try:
        opts = BoxOptions(**values)
    except ConfigError:
        return
    texts = [opts.working_dir, opts.user, *(opts.entrypoint or []), *(opts.cmd or []), *opts.env, *opts.env.values()]
    for text in texts:
        if text is not None:
            check_text(text, "a field")
    assert all(key and "=" not in key for key in opts.env)
    assert opts.cpus >= 1 and 128 <= opts.memory_mib <= 65536
    assert opts.disk_size_gb is None or (0 < opts.disk_size_gb <= 2048)


# -- examples the properties found (kept as plain tests) -----------------------------------------------------------
@pytest.mark.parametrize("values", [
    {"disk_size_gb": 10**5000},                      # repr() of the input raised ValueError (int-to-str limit)
    {"cpus": "9" * 100_000},                         # the whole input went into the message
    {"env": {"A\0": "1"}}, {"env": {"A": "1\0"}}, {"env": {"A=B": "1"}}, {"env": {"": "1"}},
    {"env": [("A", None)]}, {"env": ["ab"]}, {"env": [b"ab"]},  # converted to "None", {"a": "b"}, {"97": "98"}
    {"env": [([], None)]},                           # TypeError: unhashable type (found by the property)
    {"ports": 1}, {"volumes": True},                 # TypeError: not iterable
    {"volumes": [("", "\udc80", "")]},               # UnicodeEncodeError from pydantic-core
    {"working_dir": "/a\0b"}, {"user": "root\0"}, {"cmd": ["a\0"]}, {"entrypoint": ["\ud800"]},
    {"rootfs_path": "/x\0"},
    {"image": "archive:/x\0"}, {"image": "oci-layout:\ud800"},
])
def test_found_box_options(values: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        BoxOptions(**values)
    assert len(str(info.value)) < 2000


@pytest.mark.parametrize("values", [
    {"home_dir": "~nosuchuser-xyz/box"},             # RuntimeError from Path.expanduser()
    {"boot_timeout_s": math.nan}, {"boot_timeout_s": math.inf}, {"boot_timeout_s": -1.0},
])
def test_found_runtime_options(values: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Options(**values)


def test_env_pairs_still_work() -> None:
    assert BoxOptions(env=[("A", "1"), ["B", "x=y"]]).env == {"A": "1", "B": "x=y"}
    assert BoxOptions(env={"PATH": "/bin", "EMPTY": ""}).env == {"PATH": "/bin", "EMPTY": ""}
