"""Filesystem backend: ``file:///ROOT`` (a plain path means the same).

Atomic puts: the object is written to a temporary file in a staging directory
on the same filesystem (``ROOT/.syncagent-tmp`` by default), fsynced, checked
by ``before_commit`` and renamed into place. When the key needs directories
that do not exist yet, the topmost missing directory is built inside the
staging directory with the object in it and renamed into place in one step, so
a new directory is never visible empty. Staging outside the directories a
reader lists (rather than beside the object) keeps temporary names out of every
listing: a registry lists ``_manifests/tags/`` without filtering names.
Deletes remove the directories they leave empty.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import shutil
import stat
import itertools
from pathlib import Path
from typing import BinaryIO, Iterator

from .base import BaseBackend, BeforeCommit, Capabilities, Entry, ObjectInfo, check_key, check_prefix
from .errors import BackendError, ConfigurationError, InvalidKey, NotFound, PermissionDenied, TransientError
from .options import option, parse_options

STAGING_NAME = ".syncagent-tmp"
_COPY_BUFFER = 1 << 20
_PUT_ATTEMPTS = 8
_KNOWN_DIRS_MAX = 200_000


@dataclasses.dataclass(frozen=True)
class FilesystemOptions:
    fsync: bool = option(True, "fsync each object and its directory before it counts as written")
    staging: str = option(STAGING_NAME, "staging directory for temporary files, relative to the root or absolute; must be on the same filesystem")


def _translate(exc: OSError, key: str) -> BackendError:
    if isinstance(exc, (FileNotFoundError, NotADirectoryError, IsADirectoryError)):
        return NotFound(f"no such object: {key}", key=key)
    if isinstance(exc, PermissionError) or exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return PermissionDenied(f"{key}: {exc.strerror}", key=key)
    if exc.errno in (errno.EAGAIN, errno.EINTR, errno.EBUSY, errno.ETIMEDOUT):
        return TransientError(f"{key}: {exc.strerror}", key=key)
    return BackendError(f"{key}: {exc.strerror or exc}", key=key)


@contextlib.contextmanager
def _translating(key: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise _translate(exc, key) from exc


class FilesystemBackend(BaseBackend):
    def __init__(self, root: str | os.PathLike, options: FilesystemOptions = FilesystemOptions()) -> None:
        self.root = Path(root).absolute()
        self._root = str(self.root)
        self.options = options
        staging = Path(options.staging)
        self.staging = staging if staging.is_absolute() else self.root / staging
        self._staging_component = options.staging if not staging.is_absolute() and "/" not in options.staging else None
        self._staging = str(self.staging)
        self._known_dirs: set[str] = set()
        self._names = itertools.count()
        self.url = f"file://{self.root}"
        self.capabilities = Capabilities(empty_prefixes=True, default_concurrency=8, local=True)
        self._staging_ready = False
        if self.root.exists() and not self.root.is_dir():
            raise ConfigurationError(f"{self.root} is not a directory")

    @classmethod
    def from_url(cls, parts, query) -> "FilesystemBackend":
        if parts.netloc not in ("", "localhost"):
            raise ConfigurationError(f"file:// URLs name a local path; got host {parts.netloc!r}")
        if not parts.path:
            raise ConfigurationError("file:// URL without a path")
        return cls(parts.path, parse_options(FilesystemOptions, query, scheme="file"))

    def _path(self, key: str) -> str:
        check_key(key)
        if self._staging_component and key.split("/", 1)[0] == self._staging_component:
            raise InvalidKey(f"{key}: reserved for temporary files", key=key)
        return f"{self._root}/{key}"

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = os.stat(path)
        except OSError as exc:
            raise _translate(exc, key) from exc
        if not _is_regular(st.st_mode):
            raise NotFound(f"not an object: {key}", key=key)
        return ObjectInfo(key, st.st_size)

    def open_read(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return open(path, "rb", buffering=0)  # callers read in large chunks; no buffer to set up
        except OSError as exc:
            raise _translate(exc, key) from exc

    def read_prefix(self, key: str, size: int) -> bytes:
        """Small reads (links, manifests) with three system calls and no file object."""
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise _translate(exc, key) from exc
        try:
            chunks: list[bytes] = []
            remaining = size
            while remaining > 0:
                chunk = os.read(fd, remaining)
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
        except OSError as exc:
            raise _translate(exc, key) from exc
        finally:
            os.close(fd)
        return b"".join(chunks)

    def put(self, key: str, data: BinaryIO, *, size: int | None = None, before_commit: BeforeCommit | None = None) -> ObjectInfo:
        target = self._path(key)
        work = f"{self._staging}/{os.getpid()}-{next(self._names)}"
        tmp_file = f"{work}.part"
        try:
            with _translating(key):
                self._prepare_staging()
            written = self._write_file(tmp_file, data, key)
            if before_commit is not None:
                before_commit()
            with _translating(key):
                self._move_into_place(tmp_file, target, work)
        except BaseException:
            _remove_quietly(self._staging, work)
            _remove_quietly(self._staging, tmp_file)
            raise
        return ObjectInfo(key, written)

    def _write_file(self, path: str, data: BinaryIO, key: str) -> int:
        """Copy ``data`` to ``path``; errors of the caller's stream propagate untranslated."""
        written = 0
        with _translating(key):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            while chunk := data.read(_COPY_BUFFER):
                view = memoryview(chunk)
                while view:
                    with _translating(key):
                        view = view[os.write(fd, view):]
                written += len(chunk)
            if self.options.fsync:
                with _translating(key):
                    os.fsync(fd)
        finally:
            os.close(fd)
        return written

    def _move_into_place(self, tmp_file: str, target: str, work: str) -> None:
        """Rename the finished file to ``target``, bringing missing directories with it.

        Directories this backend saw exist are remembered, so the common case is
        one rename; otherwise the topmost missing directory is built in the
        staging directory around the file and renamed into place in one step.
        """
        parent, name = os.path.split(target)
        for _ in range(_PUT_ATTEMPTS):
            missing = None if parent in self._known_dirs else self._topmost_missing_dir(parent)
            if missing is None:
                try:
                    os.rename(tmp_file, target)
                except FileNotFoundError:
                    self._known_dirs.discard(parent)  # removed meanwhile (a concurrent delete): start over
                    continue
                except IsADirectoryError as exc:
                    raise BackendError(f"{target}: a directory is in the way") from exc
                except NotADirectoryError as exc:
                    raise BackendError(f"{target}: a file is in the way of a directory") from exc
                self._remember_dir(parent)
                self._sync_dir(parent)
                return
            inner = work
            os.mkdir(inner)
            relative = os.path.relpath(parent, missing)
            for component in ([] if relative == "." else relative.split("/")):
                inner = f"{inner}/{component}"
                os.mkdir(inner)
            os.rename(tmp_file, f"{inner}/{name}")
            try:
                os.rename(work, missing)
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOENT):
                    raise
                os.rename(f"{inner}/{name}", tmp_file)  # someone else created it: retry
                shutil.rmtree(work, ignore_errors=True)
                continue
            self._remember_dir(parent)
            self._sync_dir(os.path.dirname(missing))
            return
        raise TransientError(f"{target}: directories kept changing under a concurrent writer", key=target)

    def _topmost_missing_dir(self, directory: str) -> str | None:
        """The highest missing directory on the way to ``directory`` (None if it exists)."""
        if os.path.isdir(directory):
            return None
        missing = directory
        while True:
            up = os.path.dirname(missing)
            if up == self._root or up in self._known_dirs or os.path.isdir(up):
                break
            missing = up
        if up == self._root and not os.path.isdir(self._root):
            os.makedirs(self._root, exist_ok=True)
        if os.path.lexists(missing):
            if os.path.isdir(missing):
                return None  # a concurrent writer just created it: try the rename again
            raise BackendError(f"{missing}: a file is in the way of a directory")
        return missing

    def _remember_dir(self, directory: str) -> None:
        if len(self._known_dirs) >= _KNOWN_DIRS_MAX:
            self._known_dirs.clear()
        self._known_dirs.add(directory)

    def _prepare_staging(self) -> None:
        if self._staging_ready:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self.staging.mkdir(parents=True, exist_ok=True)
        if os.stat(self.staging).st_dev != os.stat(self.root).st_dev:
            raise BackendError(f"staging directory {self.staging} is not on the filesystem of {self.root}; set ?staging=")
        for entry in os.scandir(self.staging):
            pid = entry.name.split("-", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                _remove_quietly(self._staging, entry.path)
        self._staging_ready = True

    def _sync_dir(self, directory: Path) -> None:
        if not self.options.fsync:
            return
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        except OSError as exc:
            raise _translate(exc, key) from exc
        parent = os.path.dirname(path)
        while parent != self._root:
            try:
                os.rmdir(parent)
            except OSError:
                break
            self._known_dirs.discard(parent)
            parent = os.path.dirname(parent)

    def iter_children(self, prefix: str) -> Iterator[Entry]:
        check_prefix(prefix)
        directory = f"{self._root}/{prefix}" if prefix else self._root
        try:
            entries = os.scandir(directory)
        except FileNotFoundError as exc:
            if not self.root.is_dir():
                raise NotFound(f"{self.root} does not exist", key=prefix) from exc
            return
        except NotADirectoryError as exc:
            if not self.root.is_dir():
                raise ConfigurationError(f"{self.root} is not a directory") from exc
            raise BackendError(f"cannot list {prefix!r}: a file stands where a directory should be", key=prefix) from exc
        except OSError as exc:
            raise _translate(exc, prefix) from exc
        with entries:
            for entry in entries:
                if not prefix and entry.name == self._staging_component:
                    continue
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    continue
                yield Entry(entry.name, is_dir)

    def iter_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        stack = [prefix]
        while stack:
            current = stack.pop()
            for entry in self.iter_children(current):
                key = current + entry.name
                if entry.is_prefix:
                    stack.append(key + "/")
                    continue
                try:
                    size = os.stat(f"{self._root}/{key}").st_size
                except FileNotFoundError:
                    continue
                yield ObjectInfo(key, size)


def _is_regular(mode: int) -> bool:
    return stat.S_ISREG(mode)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_quietly(staging: str, path: str) -> None:
    if os.path.dirname(path) != staging:
        return
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except OSError:
            pass
