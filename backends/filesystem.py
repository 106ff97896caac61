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

Symbolic links below the root are never followed, by any operation: a
registry's own storage holds none, and one that points outside the root would
make this backend read, publish, write or delete what lies outside. Paths are
opened with :func:`backends.nofollow.open_beneath` (one ``openat2`` with
``RESOLVE_NO_SYMLINKS`` on Linux: the kernel refuses a link anywhere on the
path while it resolves it, so there is no window between a check and the use),
renames and deletes go through a directory opened that way, and listings read
each entry's type without following it. A link met raises
:class:`~backends.errors.SymlinkRefused`; a listing yields everything else
first and raises it at the end, naming every link. The root itself may be
reached through links (``/srv/registry -> /data/registry``): its real path is
resolved when the backend is opened. Deleting a key that is itself a link
removes the link, never what it points to.

Staging names carry the writer's identity (host, boot, pid namespace, pid and
start time: :class:`~backends.processes.WriterIdentity`) and a random token of
the backend instance, so two writers never share a name, whatever host,
container or process they run in. A writer sweeps the staging entries of
writers it can prove dead (same host, boot and pid namespace; the process is
gone) and keeps every other: a live writer's file is never removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import itertools
import os
import secrets
import shutil
import stat
import threading
import weakref
from pathlib import Path
from typing import BinaryIO, Iterator

from .base import BaseBackend, BeforeCommit, Capabilities, Entry, ObjectInfo, check_key, check_prefix
from .errors import BackendError, ConfigurationError, InvalidKey, NotFound, PermissionDenied, SymlinkRefused, TransientError
from .nofollow import DIRECTORY_HANDLE, open_beneath
from .options import option, parse_options
from .processes import WriterIdentity

STAGING_NAME = ".syncagent-tmp"
_COPY_BUFFER = 1 << 20
_PUT_ATTEMPTS = 8
_REFUSED_NAMED = 1000  # links a listing names at most (it counts them all)
_O_PATH = getattr(os, "O_PATH", 0)
_STAT_HANDLE = (_O_PATH or os.O_RDONLY | os.O_NONBLOCK) | os.O_NOFOLLOW
_READ = os.O_RDONLY | os.O_NONBLOCK  # a FIFO planted in the tree must not block a reader


@dataclasses.dataclass(frozen=True)
class FilesystemOptions:
    fsync: bool = option(True, "fsync each object and its directory before it counts as written")
    staging: str = option(STAGING_NAME, "staging directory for temporary files, relative to the root or absolute; must be on the same filesystem")


_writer_name: str | None = None


def _writer() -> str:
    """This process's identity as a staging name prefix (computed once per process)."""
    global _writer_name
    if _writer_name is None:
        _writer_name = WriterIdentity.current().as_name()
    return _writer_name


def _forget_writer() -> None:
    global _writer_name
    _writer_name = None


os.register_at_fork(after_in_child=_forget_writer)


class FilesystemBackend(BaseBackend):
    def __init__(self, root: str | os.PathLike, options: FilesystemOptions = FilesystemOptions()) -> None:
        self.root = Path(root).absolute()
        self._root = str(self.root)
        self._real_root = os.path.realpath(self._root)
        self.options = options
        staging = Path(options.staging)
        self.staging = staging if staging.is_absolute() else self.root / staging
        self._staging_component = options.staging if not staging.is_absolute() and "/" not in options.staging else None
        relative = os.path.normpath(options.staging)
        if staging.is_absolute() or relative.startswith(".."):
            self._staging_at = (None, "")  # resolved when first needed: it may not exist yet
        else:
            self._staging_at = (self._real_root, relative)
        self._staging_fd: int | None = None
        self._staging_lock = threading.Lock()
        self._open_fds: list[int] = []  # staging directories opened, closed with the backend
        weakref.finalize(self, _close_all, self._open_fds)
        self._token = secrets.token_hex(6)
        self._names = itertools.count()
        self.url = f"file://{self.root}"
        self.capabilities = Capabilities(empty_prefixes=True, default_concurrency=8, local=True, local_root=self._root)
        if self.root.exists() and not self.root.is_dir():
            raise ConfigurationError(f"{self.root} is not a directory")

    @classmethod
    def from_url(cls, parts, query) -> "FilesystemBackend":
        if parts.netloc not in ("", "localhost"):
            raise ConfigurationError(f"file:// URLs name a local path; got host {parts.netloc!r}")
        if not parts.path:
            raise ConfigurationError("file:// URL without a path")
        return cls(parts.path, parse_options(FilesystemOptions, query, scheme="file"))

    # -- paths and errors ------------------------------------------------------------------

    def _relative(self, key: str) -> str:
        check_key(key)
        if self._staging_component and key.split("/", 1)[0] == self._staging_component:
            raise InvalidKey(f"{key}: reserved for temporary files", key=key)
        return key

    def _open(self, relative: str, flags: int, mode: int = 0o666) -> int:
        """``open_beneath`` the root; when the root's own real path has changed (a link above the
        root was moved), it is resolved again once."""
        try:
            return open_beneath(self._real_root, relative, flags, mode)
        except OSError as exc:
            if exc.errno != errno.ELOOP or os.path.realpath(self._root) == self._real_root:
                raise
            self._real_root = os.path.realpath(self._root)
            return open_beneath(self._real_root, relative, flags, mode)

    def _link_in(self, key: str) -> str | None:
        """The first component of ``key`` that is a symbolic link (for messages; None if there is none now)."""
        path = self._real_root
        parts = key.rstrip("/").split("/")
        for depth, part in enumerate(parts, 1):
            path = f"{path}/{part}"
            try:
                if stat.S_ISLNK(os.lstat(path).st_mode):
                    return "/".join(parts[:depth])
            except OSError:
                return None
        return None

    def _refused(self, key: str) -> SymlinkRefused:
        link = self._link_in(key) or key.rstrip("/")
        return SymlinkRefused(f"{link} is a symbolic link: links below the root are never followed", key=key, keys=(link,))

    def _translate(self, exc: OSError, key: str) -> BackendError:
        if exc.errno == errno.ELOOP:
            return self._refused(key)
        if isinstance(exc, (FileNotFoundError, NotADirectoryError, IsADirectoryError)):
            return NotFound(f"no such object: {key}", key=key)
        if isinstance(exc, PermissionError) or exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return PermissionDenied(f"{key}: {exc.strerror}", key=key)
        if exc.errno in (errno.EAGAIN, errno.EINTR, errno.EBUSY, errno.ETIMEDOUT):
            return TransientError(f"{key}: {exc.strerror}", key=key)
        return BackendError(f"{key}: {exc.strerror or exc}", key=key)

    @contextlib.contextmanager
    def _translating(self, key: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise self._translate(exc, key) from exc

    # -- reads -----------------------------------------------------------------------------

    def stat(self, key: str) -> ObjectInfo:
        relative = self._relative(key)
        with self._translating(key):
            fd = self._open(relative, _STAT_HANDLE)
            try:
                st = os.fstat(fd)
            finally:
                os.close(fd)
        if stat.S_ISLNK(st.st_mode):
            raise self._refused(key)
        if not stat.S_ISREG(st.st_mode):
            raise NotFound(f"not an object: {key}", key=key)
        return ObjectInfo(key, st.st_size)

    def open_read(self, key: str) -> BinaryIO:
        relative = self._relative(key)
        with self._translating(key):
            fd = self._open(relative, _READ)
            try:
                regular = stat.S_ISREG(os.fstat(fd).st_mode)
            except OSError:
                os.close(fd)
                raise
        if not regular:
            os.close(fd)
            raise NotFound(f"not an object: {key}", key=key)
        return open(fd, "rb", buffering=0)  # callers read in large chunks; no buffer to set up

    def read_prefix(self, key: str, size: int) -> bytes:
        """Small reads (links, manifests) with three system calls and no file object."""
        relative = self._relative(key)
        with self._translating(key):
            fd = self._open(relative, _READ)
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
            raise self._translate(exc, key) from exc
        finally:
            os.close(fd)
        return b"".join(chunks)

    # -- puts ------------------------------------------------------------------------------

    def put(self, key: str, data: BinaryIO, *, size: int | None = None, before_commit: BeforeCommit | None = None) -> ObjectInfo:
        relative = self._relative(key)
        work = f"{_writer()}.{self._token}.{next(self._names)}"  # unique: no other writer uses this name
        part = f"{work}.part"
        staging = None
        try:
            with self._translating(key):
                staging, fd = self._create(part)
            written = self._write_file(fd, data, key)
            if before_commit is not None:
                before_commit()
            with self._translating(key):
                self._move_into_place(staging, part, relative, work)
        except BaseException:
            if staging is not None:  # only what this put created: the names are its own
                _remove_entry(staging, work)
                _remove_entry(staging, part)
            raise
        return ObjectInfo(key, written)

    def _create(self, part: str) -> tuple[int, int]:
        """The staging directory and the temporary file created in it (a staging directory
        removed meanwhile is made again)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        staging = self._prepare_staging()
        try:
            return staging, os.open(part, flags, 0o666, dir_fd=staging)
        except FileNotFoundError:
            staging = self._prepare_staging(stale=staging)
            return staging, os.open(part, flags, 0o666, dir_fd=staging)

    def _write_file(self, fd: int, data: BinaryIO, key: str) -> int:
        """Copy ``data`` to ``fd`` and close it; errors of the caller's stream propagate untranslated."""
        written = 0
        try:
            while chunk := data.read(_COPY_BUFFER):
                view = memoryview(chunk)
                while view:
                    with self._translating(key):
                        view = view[os.write(fd, view):]
                written += len(chunk)
            if self.options.fsync:
                with self._translating(key):
                    os.fsync(fd)
        finally:
            os.close(fd)
        return written

    def _move_into_place(self, staging: int, part: str, relative: str, work: str) -> None:
        """Rename the finished file to ``relative``, bringing missing directories with it.

        The common case is one rename into the parent directory, opened without
        following links; otherwise the topmost missing directory is built in
        the staging directory around the file and renamed into place in one step.
        """
        parent, _, name = relative.rpartition("/")
        directory_flags = (os.O_RDONLY | os.O_DIRECTORY) if self.options.fsync else DIRECTORY_HANDLE
        for _ in range(_PUT_ATTEMPTS):
            try:
                parent_fd = self._open(parent, directory_flags)
            except FileNotFoundError:
                parent_fd = None
            except NotADirectoryError as exc:
                raise self._in_the_way(parent) from exc
            if parent_fd is not None:
                try:
                    os.rename(part, name, src_dir_fd=staging, dst_dir_fd=parent_fd)
                    self._sync_dir(parent_fd)
                    return
                except FileNotFoundError:
                    continue  # the directory was removed meanwhile (a concurrent delete): start over
                except IsADirectoryError as exc:
                    raise BackendError(f"{relative}: a directory is in the way", key=relative) from exc
                finally:
                    os.close(parent_fd)
            ancestor_fd, missing, below = self._deepest_existing(parent)
            try:
                inner = work
                os.mkdir(inner, dir_fd=staging)
                for component in below:
                    inner = f"{inner}/{component}"
                    os.mkdir(inner, dir_fd=staging)
                os.rename(part, f"{inner}/{name}", src_dir_fd=staging, dst_dir_fd=staging)
                try:
                    os.rename(work, missing, src_dir_fd=staging, dst_dir_fd=ancestor_fd)
                except OSError as exc:
                    if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOENT, errno.ENOTDIR):
                        raise
                    os.rename(f"{inner}/{name}", part, src_dir_fd=staging, dst_dir_fd=staging)  # someone else created it: retry
                    shutil.rmtree(work, ignore_errors=True, dir_fd=staging)
                    continue
                self._sync_dir(ancestor_fd)
                return
            finally:
                os.close(ancestor_fd)
        raise TransientError(f"{relative}: directories kept changing under a concurrent writer", key=relative)

    def _deepest_existing(self, directory: str) -> tuple[int, str, list[str]]:
        """For a missing ``directory``: its deepest existing ancestor (opened), the name of the
        topmost missing directory in it, and the components below that one."""
        parts = directory.split("/")
        flags = (os.O_RDONLY | os.O_DIRECTORY) if self.options.fsync else DIRECTORY_HANDLE
        for depth in range(len(parts) - 1, -1, -1):
            ancestor = "/".join(parts[:depth])
            try:
                return self._open(ancestor, flags), parts[depth], parts[depth + 1:]
            except FileNotFoundError:
                if not ancestor:
                    raise
            except NotADirectoryError as exc:
                raise self._in_the_way(ancestor) from exc
        raise AssertionError("unreachable")

    def _in_the_way(self, directory: str) -> BackendError:
        return BackendError(f"{directory}: a file is in the way of a directory", key=directory)

    def _sync_dir(self, fd: int) -> None:
        if self.options.fsync:
            os.fsync(fd)

    def _prepare_staging(self, stale: int | None = None) -> int:
        """The staging directory, opened (created, checked and swept of dead writers' leftovers once).

        ``stale``: a descriptor of it found removed; it is opened anew (the old one stays open
        until the backend closes: another thread may be using it).
        """
        fd = self._staging_fd
        if fd is not None and fd != stale:
            return fd
        with self._staging_lock:
            if self._staging_fd is None or self._staging_fd == stale:
                self._staging_fd = self._open_staging()
                self._open_fds.append(self._staging_fd)
            return self._staging_fd

    def _open_staging(self) -> int:
        os.makedirs(self._root, exist_ok=True)
        base, relative = self._staging_at
        if base is None:
            base = os.path.realpath(self.staging)
            os.makedirs(base, exist_ok=True)
        parts = relative.split("/") if relative else []
        for depth, part in enumerate(parts):
            parent = open_beneath(base, "/".join(parts[:depth]), DIRECTORY_HANDLE)
            try:
                os.mkdir(part, dir_fd=parent)
            except FileExistsError:
                pass
            finally:
                os.close(parent)
        fd = open_beneath(base, relative, DIRECTORY_HANDLE)
        try:
            if os.fstat(fd).st_dev != os.stat(self._real_root).st_dev:
                raise BackendError(f"staging directory {self.staging} is not on the filesystem of {self.root}; set ?staging=")
            self._sweep_staging(base, relative, fd)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _sweep_staging(self, base: str, relative: str, staging: int) -> None:
        """Remove the entries of writers known to be dead; keep every other one."""
        listing = open_beneath(base, relative, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with os.scandir(listing) as entries:
                dead = [entry.name for entry in entries if _dead_writer(entry.name)]
        finally:
            os.close(listing)
        for name in dead:
            _remove_entry(staging, name)

    def close(self) -> None:
        with self._staging_lock:
            self._staging_fd = None
            _close_all(self._open_fds)

    # -- deletes ---------------------------------------------------------------------------

    def delete(self, key: str) -> None:
        relative = self._relative(key)
        parent, _, name = relative.rpartition("/")
        try:
            parent_fd = self._open(parent, DIRECTORY_HANDLE)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise self._translate(exc, key) from exc
        try:
            os.unlink(name, dir_fd=parent_fd)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        except OSError as exc:
            raise self._translate(exc, key) from exc
        finally:
            os.close(parent_fd)
        while parent:
            up, _, name = parent.rpartition("/")
            try:
                up_fd = self._open(up, DIRECTORY_HANDLE)
            except OSError:
                return
            try:
                os.rmdir(name, dir_fd=up_fd)
            except OSError:
                return
            finally:
                os.close(up_fd)
            parent = up

    # -- listings --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _listing(self, prefix: str) -> Iterator[Iterator[os.DirEntry]]:
        """The entries of the directory ``prefix`` names; none if it does not exist."""
        try:
            fd = self._open(prefix[:-1], os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError as exc:
            if not self.root.is_dir():
                raise NotFound(f"{self.root} does not exist", key=prefix) from exc
            fd = None
        except NotADirectoryError as exc:
            if not self.root.is_dir():
                raise ConfigurationError(f"{self.root} is not a directory") from exc
            raise BackendError(f"cannot list {prefix!r}: a file stands where a directory should be", key=prefix) from exc
        except OSError as exc:
            raise self._translate(exc, prefix) from exc
        if fd is None:
            yield iter(())
            return
        try:
            with os.scandir(fd) as entries:
                yield entries
        finally:
            os.close(fd)

    def _refused_links(self, prefix: str, links: list[str], count: int) -> SymlinkRefused:
        named = ", ".join(links[:3]) + (f" and {count - 3} more" if count > 3 else "")
        return SymlinkRefused(
            f"{count} symbolic link(s) under {prefix or 'the root'} not followed: {named}", key=prefix, keys=tuple(links)
        )

    def iter_children(self, prefix: str) -> Iterator[Entry]:
        """Immediate children; symbolic links are not yielded but named by a SymlinkRefused at the end."""
        check_prefix(prefix)
        links: list[str] = []
        count = 0
        with self._listing(prefix) as entries:
            for entry in entries:
                if not prefix and entry.name == self._staging_component:
                    continue
                try:
                    if entry.is_symlink():
                        count += 1
                        if len(links) < _REFUSED_NAMED:
                            links.append(prefix + entry.name)
                        continue
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                yield Entry(entry.name, is_dir)
        if count:
            raise self._refused_links(prefix, links, count)

    def iter_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every regular file below ``prefix``; symbolic links are named by a SymlinkRefused at the end."""
        check_prefix(prefix)
        stack = [prefix]
        links: list[str] = []
        count = 0
        while stack:
            current = stack.pop()
            try:
                with self._listing(current) as entries:
                    for entry in entries:
                        if not current and entry.name == self._staging_component:
                            continue
                        key = current + entry.name
                        try:
                            if entry.is_symlink():
                                mode = stat.S_IFLNK
                            elif entry.is_dir(follow_symlinks=False):
                                stack.append(key + "/")
                                continue
                            else:
                                st = entry.stat(follow_symlinks=False)
                                mode = st.st_mode
                        except FileNotFoundError:
                            continue
                        except OSError as exc:
                            raise self._translate(exc, key) from exc
                        if stat.S_ISLNK(mode):
                            count += 1
                            if len(links) < _REFUSED_NAMED:
                                links.append(key)
                        elif stat.S_ISREG(mode):
                            yield ObjectInfo(key, st.st_size)
            except SymlinkRefused:
                if current == prefix:
                    raise
                count += 1  # a directory replaced by a link since it was listed
                if len(links) < _REFUSED_NAMED:
                    links.append(current[:-1])
        if count:
            raise self._refused_links(prefix, links, count)


def _dead_writer(name: str) -> bool:
    identity = WriterIdentity.from_name(name)
    return identity is not None and identity.alive() is False


def _remove_entry(directory_fd: int, name: str) -> None:
    """Remove ``name`` in the directory (a tree, a file or a link: never what a link points to)."""
    try:
        if stat.S_ISDIR(os.stat(name, dir_fd=directory_fd, follow_symlinks=False).st_mode):
            shutil.rmtree(name, ignore_errors=True, dir_fd=directory_fd)
        else:
            os.unlink(name, dir_fd=directory_fd)
    except OSError:
        pass


def _close_all(fds: list[int]) -> None:
    while fds:
        try:
            os.close(fds.pop())
        except OSError:
            pass
