"""Staging names of the filesystem backend: unique per writer, swept only when their writer is provably dead."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from dataclasses import replace

import pytest

from backends import BackendError
from backends.filesystem import STAGING_NAME, FilesystemBackend
from backends.processes import WriterIdentity


def staging_names_during_put(backend: FilesystemBackend, key: str) -> list[str]:
    seen: list[str] = []
    backend.put(key, io.BytesIO(b"x"), before_commit=lambda: seen.extend(os.listdir(backend.staging)))
    return seen


def test_two_backends_in_one_process_never_share_a_staging_name(tmp_path):
    first, second = FilesystemBackend(tmp_path), FilesystemBackend(tmp_path)
    names_first = staging_names_during_put(first, "a")
    names_second = staging_names_during_put(second, "b")
    assert len(names_first) == len(names_second) == 1
    assert names_first != names_second
    writer = WriterIdentity.from_name(names_first[0])
    assert writer.pid == os.getpid() and writer.alive() is True


def test_a_second_backend_writes_while_the_first_has_a_file_in_flight(tmp_path):
    first = FilesystemBackend(tmp_path)

    def second_writer() -> None:
        FilesystemBackend(tmp_path).put_bytes("k2", b"second writer")

    first.put("k1", io.BytesIO(b"first writer"), before_commit=second_writer)
    assert (tmp_path / "k1").read_bytes() == b"first writer"
    assert (tmp_path / "k2").read_bytes() == b"second writer"
    assert os.listdir(tmp_path / STAGING_NAME) == []


def test_a_name_collision_never_removes_the_other_writers_file(tmp_path, monkeypatch):
    backend = FilesystemBackend(tmp_path)
    backend.put_bytes("warm-up", b"creates the staging directory")
    other = FilesystemBackend(tmp_path)
    monkeypatch.setattr(other, "_token", backend._token)  # the collision unique names prevent, forced
    in_flight = staging_name = None

    def collide() -> None:
        nonlocal in_flight, staging_name
        (staging_name,) = os.listdir(backend.staging)
        in_flight = (backend.staging / staging_name).read_bytes()
        monkeypatch.setattr(other, "_names", iter([int(staging_name.split(".")[-2])]))
        with pytest.raises(BackendError):
            other.put_bytes("k2", b"second writer")

    backend.put(key="k1", data=io.BytesIO(b"first writer"), before_commit=collide)
    assert in_flight == b"first writer"
    assert (tmp_path / "k1").read_bytes() == b"first writer"  # its file survived the other's failure


def identity_of_a_dead_process() -> WriterIdentity:
    child = subprocess.run(
        [sys.executable, "-c", "from backends.processes import WriterIdentity as W; print(W.current().as_name())"],
        capture_output=True, text=True, check=True,
    )
    return WriterIdentity.from_name(child.stdout.strip())


def test_the_sweep_removes_only_what_provably_dead_writers_left(tmp_path):
    staging = tmp_path / STAGING_NAME
    staging.mkdir()
    dead = identity_of_a_dead_process()
    assert dead.alive() is False
    me = WriterIdentity.current()
    other_host = replace(dead, host="another-host")
    other_namespace = replace(dead, pidns="4026531999")
    other_boot = replace(dead, boot="00000000-0000-0000-0000-000000000000")
    (staging / f"{dead.as_name()}.abc.0.part").write_bytes(b"half a blob")
    (staging / f"{dead.as_name()}.abc.1").mkdir()
    (staging / f"{dead.as_name()}.abc.1" / "link").write_bytes(b"x")
    kept = [
        f"{me.as_name()}.other-instance.0.part",  # alive: this very process
        f"{other_host.as_name()}.abc.0.part",  # another machine on a shared volume: cannot tell
        f"{other_namespace.as_name()}.abc.0.part",  # another container: its pid means nothing here
        f"{other_boot.as_name()}.abc.0.part",  # written in another boot: of this host, or of another?
        f"{dead.pid}-7.part",  # an older version's name: its writer cannot be judged
    ]
    for name in kept:
        (staging / name).write_bytes(b"in flight")
    FilesystemBackend(tmp_path).put_bytes("k", b"v")
    assert sorted(os.listdir(staging)) == sorted(kept)


def test_writer_identity_round_trips_and_judges_only_where_it_can():
    me = WriterIdentity.current()
    assert me.alive() is True
    named = WriterIdentity.from_name(me.as_name())
    assert named == replace(me, host=named.host) and named.host != me.host  # a host name is hashed in file names
    assert WriterIdentity.from_name(me.as_name() + ".token.3.part") == named
    assert named.alive() is True
    assert WriterIdentity.from_dict(me.as_dict()) == me
    assert replace(me, start="1").alive() is False  # the pid now names another process
    assert replace(me, host="elsewhere").alive() is None
    assert replace(me, boot="").alive() is None
    for bad in ("12-3.part", "w1.zz.boot.1.2.3", me.as_name() + "x"):
        assert WriterIdentity.from_name(bad) is None
    for bad in ({}, {"host": "h", "boot": "b", "pidns": "1", "pid": "7", "start": "1"}, []):
        with pytest.raises(ValueError):
            WriterIdentity.from_dict(bad)
