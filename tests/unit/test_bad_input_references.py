"""Property tests for image references: any text either parses or raises ConfigError (bad syntax is a
configuration error, as everywhere an image is named: BoxOptions(image=...), the image store, the CLI).

What parses is consistent: its canonical form parses to the same reference, and its parts obey Docker's grammar.
The image store, given any reference or path, raises a BoxliteError (ConfigError, NotFoundError, ImageError) and
never a ValueError or RuntimeError from the file system; none of this touches the network.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from boxlite import BoxliteError, ConfigError, ImageError, NotFoundError
from boxlite.images.reference import check_image_option, parse_reference
from boxlite.images.store import ImageStore

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                            HealthCheck.function_scoped_fixture])

# Pieces of references, good and bad, put together at random.
pieces = st.sampled_from([
    "python", "library", "ghcr.io", "localhost", "127.0.0.1:5000", "[::1]:5000", "Upper", "a__b", "a-b", "a.b",
    ":", "/", "@", "sha256:", "a" * 64, "0" * 64, "latest", "3.12-slim", "..", ".", "-", "_", " ", "\t", "\0",
    "\ud800", "é", "中", "~", "oci-layout:", "archive:", "x" * 130, ":5000", "host:99999",
])
references = st.one_of(
    st.lists(pieces, min_size=1, max_size=8).map("".join),
    st.text(max_size=60),
    st.text(alphabet="abc:/@.-_0123456789", max_size=60),
)
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")


@SETTINGS
@given(references)
def test_parse_reference_parses_or_raises_config_error(text: str) -> None:
    try:
        ref = parse_reference(text)
    except ConfigError as exc:
        assert str(exc).startswith("configuration error: invalid image reference")
        assert exc.fix
        assert len(str(exc)) < 1000
        return
    assert ref.registry and ref.repository
    assert all(_COMPONENT.match(c) for c in ref.repository.split("/"))
    assert ref.tag is not None or ref.digest is not None
    again = parse_reference(ref.canonical)
    assert (again.registry, again.repository, again.tag, again.digest) == (ref.registry, ref.repository, ref.tag,
                                                                           ref.digest)
    assert parse_reference(ref.familiar).canonical == ref.canonical


@SETTINGS
@given(references)
def test_check_image_option_accepts_or_raises_config_error(text: str) -> None:
    try:
        checked = check_image_option(text)
    except ConfigError:
        return
    # What the option accepts can go into a file name and a JSON file: no NUL, encodable.
    assert "\0" not in checked
    checked.encode()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ImageStore:
    return ImageStore(tmp_path_factory.mktemp("home"))


local = st.one_of(
    st.tuples(st.sampled_from(["oci-layout:", "archive:"]),
              st.one_of(st.text(max_size=30), st.sampled_from(["~nosuchuser-xyz/x", "/x\0", "\udc80", "/dev/null",
                                                               "/proc/self", "/etc/passwd", "", "/"]))).map("".join),
    st.text(max_size=30).map(lambda t: "sha256:" + t),
)


@SETTINGS
@given(local)
def test_store_get_of_local_references_raises_boxlite_errors(store: ImageStore, text: str) -> None:
    """Local references (paths, digests) never reach the network; any of them gives an image or a BoxliteError."""
    with contextlib.suppress(ConfigError, NotFoundError, ImageError):
        store.get(text)


@SETTINGS
@given(st.one_of(references, local))
def test_store_remove_raises_boxlite_errors(store: ImageStore, text: str) -> None:
    assume(text.strip())
    with pytest.raises(BoxliteError):  # the store is empty: nothing can be found
        store.remove(text)


@SETTINGS
@given(st.one_of(st.text(max_size=30), st.sampled_from(["~nosuchuser-xyz", "/x\0y", "\ud800", "/dev/null"])))
def test_store_load_and_import_raise_image_errors(store: ImageStore, text: str) -> None:
    for action in (store.load, store.import_layout):
        with contextlib.suppress(ImageError):
            action(Path(text) if "\0" not in text else text)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["archive:/x\0", "oci-layout:/x\0", "archive:\ud800", "oci-layout:~nosuchuser-xyz/x",
                                  "archive:~nosuchuser-xyz"])
def test_found_local_references(store: ImageStore, text: str) -> None:
    """These raised ValueError, UnicodeEncodeError or RuntimeError from inside the store."""
    with pytest.raises((ConfigError, ImageError)):
        store.get(text)
