"""The filesystem backend never follows a symbolic link below its root, whatever the operation.

Each test runs twice: with ``openat2`` (one system call) and with the
component-by-component walk used where ``openat2`` is missing.
"""

from __future__ import annotations

import io
import os

import pytest

from backends import NotFound, SymlinkRefused, nofollow
from backends.filesystem import FilesystemBackend

SECRET = b"[default]\naws_access_key_id = AKIAEXAMPLESECRET\n"
REPOS = "docker/registry/v2/repositories/"


@pytest.fixture(params=["openat2", "walk"])
def resolution(request, monkeypatch):
    if request.param == "openat2" and not nofollow.use_openat2:
        pytest.skip("openat2 is not available here")
    monkeypatch.setattr(nofollow, "use_openat2", request.param == "openat2")
    return request.param


@pytest.fixture
def tree(tmp_path, resolution):
    """A root with one real repository, and outside it a directory and a secret file."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    backend = FilesystemBackend(root)
    backend.put_bytes(REPOS + "real/_layers/link", b"inside")
    (outside / "validrepo" / "_layers").mkdir(parents=True)
    (outside / "validrepo" / "_layers" / "link").write_bytes(b"outside")
    (outside / "credentials").write_bytes(SECRET)
    return backend, root, outside


def test_reads_refuse_a_final_symlink_and_read_nothing_through_it(tree):
    backend, root, outside = tree
    link = root / REPOS / "real/_layers/current"
    link.symlink_to(outside / "credentials")
    key = REPOS + "real/_layers/current"
    for read in (backend.stat, backend.open_read, lambda k: backend.read_prefix(k, 4096), backend.read_bytes):
        with pytest.raises(SymlinkRefused) as caught:
            read(key)
        assert caught.value.keys == (key,)
        assert "AKIA" not in str(caught.value)


def test_reads_refuse_a_symlinked_directory_on_the_way(tree):
    backend, root, outside = tree
    (root / REPOS / "evil").symlink_to(outside / "validrepo")
    key = REPOS + "evil/_layers/link"
    for read in (backend.stat, backend.open_read, lambda k: backend.read_prefix(k, 10)):
        with pytest.raises(SymlinkRefused) as caught:
            read(key)
        assert caught.value.keys == (REPOS + "evil",)
    with pytest.raises(SymlinkRefused):
        list(backend.iter_children(REPOS + "evil/"))
    with pytest.raises(SymlinkRefused):
        list(backend.iter_objects(REPOS + "evil/"))


def test_listings_yield_everything_else_then_name_every_link(tree):
    backend, root, outside = tree
    (root / REPOS / "evil").symlink_to(outside / "validrepo")
    (root / REPOS / "etc").symlink_to("/etc")
    (root / REPOS / "real/_layers/data").symlink_to(outside / "credentials")
    children = []
    with pytest.raises(SymlinkRefused) as caught:
        for entry in backend.iter_children(REPOS):
            children.append(entry)
    assert [(e.name, e.is_prefix) for e in children] == [("real", True)]
    assert sorted(caught.value.keys) == [REPOS + "etc", REPOS + "evil"]
    objects = []
    with pytest.raises(SymlinkRefused) as caught:
        for info in backend.iter_objects(""):
            objects.append(info.key)
    assert objects == [REPOS + "real/_layers/link"]
    assert sorted(caught.value.keys) == [REPOS + "etc", REPOS + "evil", REPOS + "real/_layers/data"]
    assert "passwd" not in str(caught.value)


def test_a_root_reached_through_a_symlink_works(tree, tmp_path):
    backend, root, _ = tree
    alias = tmp_path / "alias"
    alias.symlink_to(root)
    via = FilesystemBackend(alias)
    assert via.read_bytes(REPOS + "real/_layers/link") == b"inside"
    assert [i.key for i in via.iter_objects("")] == [REPOS + "real/_layers/link"]
    via.put_bytes(REPOS + "new/_layers/sha256/x/link", b"new")
    assert (root / REPOS / "new/_layers/sha256/x/link").read_bytes() == b"new"
    via.delete(REPOS + "new/_layers/sha256/x/link")
    assert not (root / REPOS / "new").exists()


@pytest.mark.parametrize("key", ["evil/_layers/link", "evil/_manifests/tags/v1/current/link", "evil/new/dirs/link"])
def test_a_put_never_writes_through_a_symlinked_directory(tree, key):
    backend, root, outside = tree
    (root / REPOS / "evil").symlink_to(outside / "validrepo")
    before = sorted(str(p.relative_to(outside)) for p in outside.rglob("*"))
    with pytest.raises(SymlinkRefused) as caught:
        backend.put_bytes(REPOS + key, b"written through the link")
    assert caught.value.keys == (REPOS + "evil",)
    assert sorted(str(p.relative_to(outside)) for p in outside.rglob("*")) == before
    assert (outside / "validrepo/_layers/link").read_bytes() == b"outside"
    assert os.listdir(backend.staging) == []


def test_a_put_replaces_a_symlink_at_its_key_without_touching_its_target(tree):
    backend, root, outside = tree
    link = root / REPOS / "real/_layers/current"
    link.symlink_to(outside / "credentials")
    backend.put_bytes(REPOS + "real/_layers/current", b"sha256:new")
    assert not link.is_symlink() and link.read_bytes() == b"sha256:new"
    assert (outside / "credentials").read_bytes() == SECRET


def test_a_symlinked_staging_directory_is_refused(tmp_path, resolution):
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / ".syncagent-tmp").symlink_to(elsewhere)
    with pytest.raises(SymlinkRefused):
        FilesystemBackend(root).put_bytes("k", b"v")
    assert os.listdir(elsewhere) == [] and not (root / "k").exists()


def test_deletes_never_go_through_a_symlinked_directory(tree):
    backend, root, outside = tree
    (root / REPOS / "evil").symlink_to(outside / "validrepo")
    with pytest.raises(SymlinkRefused):
        backend.delete(REPOS + "evil/_layers/link")
    assert (outside / "validrepo/_layers/link").read_bytes() == b"outside"
    link = root / REPOS / "real/_layers/current"
    link.symlink_to(outside / "credentials")
    backend.delete(REPOS + "real/_layers/current")  # the link itself goes; what it points to stays
    assert not link.is_symlink() and (outside / "credentials").read_bytes() == SECRET


def test_a_directory_swapped_for_a_link_after_it_was_listed_is_refused(tree, monkeypatch):
    """The race: listed as a directory, replaced by a link before it is opened."""
    backend, root, outside = tree
    real = root / REPOS / "real"
    original = backend._listing

    def swapping(prefix):
        if prefix == REPOS + "real/":
            os.rename(real, root / "moved")
            real.symlink_to(outside / "validrepo")
        return original(prefix)

    monkeypatch.setattr(backend, "_listing", swapping)
    with pytest.raises(SymlinkRefused) as caught:
        list(backend.iter_objects(REPOS))
    assert caught.value.keys == (REPOS + "real",)


def test_special_files_are_not_objects_and_never_block(tree):
    backend, root, _ = tree
    os.mkfifo(root / REPOS / "real/_layers/fifo")
    key = REPOS + "real/_layers/fifo"
    with pytest.raises(NotFound):
        backend.stat(key)
    with pytest.raises(NotFound):
        backend.open_read(key)
    assert backend.read_prefix(key, 10) == b""
    assert [i.key for i in backend.iter_objects(REPOS)] == [REPOS + "real/_layers/link"]
    backend.put(REPOS + "real/_layers/fifo", io.BytesIO(b"now a file"))
    assert backend.read_bytes(key) == b"now a file"
