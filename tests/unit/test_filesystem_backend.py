"""Filesystem specifics beyond the conformance suite: directories appear with their object.

Symbolic links and staging names: tests/unit/test_filesystem_symlinks.py, tests/unit/test_filesystem_staging.py.
"""

import io
import os

import pytest

from backends import ConfigurationError, InvalidKey, open_backend
from backends.filesystem import STAGING_NAME, FilesystemBackend


def test_a_new_tag_directory_appears_only_with_its_link(tmp_path):
    backend = FilesystemBackend(tmp_path)
    tags = "docker/registry/v2/repositories/app/_manifests/tags/"
    backend.put_bytes(tags + "v1/current/link", b"sha256:" + b"a" * 64)
    seen = []

    def listing_now():
        seen.append(sorted(os.listdir(tmp_path / tags)))

    backend.put(tags + "v2/current/link", io.BytesIO(b"sha256:" + b"b" * 64), before_commit=listing_now)
    assert seen == [["v1"]]
    assert sorted(os.listdir(tmp_path / tags)) == ["v1", "v2"]
    assert os.listdir(tmp_path / STAGING_NAME) == []


def test_delete_removes_directories_it_empties_but_not_the_root(tmp_path):
    backend = FilesystemBackend(tmp_path)
    backend.put_bytes("a/b/c/link", b"x")
    backend.put_bytes("a/keep", b"y")
    backend.delete("a/b/c/link")
    assert not (tmp_path / "a" / "b").exists()
    assert (tmp_path / "a" / "keep").exists()
    backend.delete("a/keep")
    assert tmp_path.exists() and not (tmp_path / "a").exists()


def test_staging_directory_is_hidden_and_reserved(tmp_path):
    backend = FilesystemBackend(tmp_path)
    backend.put_bytes("x", b"1")
    assert [e.name for e in backend.iter_children("")] == ["x"]
    with pytest.raises(InvalidKey):
        backend.put_bytes(f"{STAGING_NAME}/evil", b"1")


def test_url_forms_and_options(tmp_path):
    assert open_backend(str(tmp_path)).root == tmp_path
    assert open_backend(f"file://{tmp_path}?fsync=false").options.fsync is False
    with pytest.raises(ConfigurationError, match="valid options: fsync, group_commit, staging"):
        open_backend(f"file://{tmp_path}?fsnyc=0")
    with pytest.raises(ConfigurationError):
        open_backend(f"file://{tmp_path}?fsync=maybe")
    with pytest.raises(ConfigurationError):
        open_backend("nosuch://x")
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigurationError):
        open_backend(str(tmp_path / "file"))


def test_a_file_in_the_way_of_a_directory_is_a_clear_error(tmp_path):
    from backends import BackendError, NotFound

    backend = FilesystemBackend(tmp_path)
    backend.put_bytes("a/b", b"file")
    with pytest.raises(BackendError, match="in the way") as caught:
        backend.put_bytes("a/b/c", b"x")
    assert not isinstance(caught.value, NotFound)
    assert backend.read_bytes("a/b") == b"file"
    assert os.listdir(tmp_path / STAGING_NAME) == []


def test_third_party_backends_register_through_entry_points(monkeypatch):
    import importlib.metadata

    from backends import ENTRY_POINT_GROUP
    from backends.memory import MemoryBackend

    class Plugin(MemoryBackend):
        @classmethod
        def from_url(cls, parts, query):
            backend = cls(parts.netloc)
            backend.url = f"plugin://{parts.netloc}"
            return backend

    class FakeEntryPoint:
        name = "plugin"

        def load(self):
            return Plugin

    def entry_points(group=None):
        return [FakeEntryPoint()] if group == ENTRY_POINT_GROUP else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    backend = open_backend("plugin://shelf")
    assert isinstance(backend, Plugin) and backend.url == "plugin://shelf"
    with pytest.raises(ConfigurationError, match="plugin"):
        open_backend("unknown://x")


def test_a_file_where_a_directory_should_be_is_an_error_not_an_empty_listing(tmp_path):
    from backends import BackendError

    backend = FilesystemBackend(tmp_path)
    backend.put_bytes("repo/_manifests/tags", b"not a directory")
    with pytest.raises(BackendError, match="a file stands where a directory should be"):
        list(backend.iter_children("repo/_manifests/tags/"))
    assert list(backend.iter_children("repo/_manifests/absent/")) == []
