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

Staged puts (:class:`~backends.base.StagedPuts`, with ``fsync`` on and
``syncfs(2)`` available): the same two halves without their fsyncs --
``stage`` writes and checks the staging file, ``publish`` renames it into
place -- and ``barrier`` is one ``syncfs`` of the root's filesystem, which
makes every earlier stage and publish durable at once.

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
import ctypes
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

from .base import BaseBackend, BeforeCommit, Capabilities, Entry, ObjectInfo, StagedObject, check_key, check_prefix
from .errors import BackendError, ConfigurationError, InvalidKey, NotFound, PermissionDenied, SymlinkRefused, TransientError
from .nofollow import DIRECTORY_HANDLE, open_beneath
from .options import option, parse_options
from .processes import WriterIdentity

STAGING_NAME = ".syncagent-tmp"
_COPY_BUFFER = 1 << 20
_PUT_ATTEMPTS = 8
_REFUSED_NAMED = 1000  # links a listing names at most (it counts them all)
_KNOWN_DIRS = 16384  # directories remembered to exist (a hint), forgotten all at once beyond that
_O_PATH = getattr(os, "O_PATH", 0)
_STAT_HANDLE = (_O_PATH or os.O_RDONLY | os.O_NONBLOCK) | os.O_NOFOLLOW
_READ = os.O_RDONLY | os.O_NONBLOCK  # a FIFO planted in the tree must not block a reader


@dataclasses.dataclass(frozen=True)
class FilesystemOptions:
    fsync: bool = option(True, "fsync each object and its directory before it counts as written")
    staging: str = option(STAGING_NAME, "staging directory for temporary files, relative to the root or absolute; must be on the same filesystem")
    group_commit: bool = option(True, "with fsync, a sync pass makes its writes durable in shared syncfs barriers instead of two fsyncs per "
                                      "object (a barrier flushes the whole filesystem: false where it is shared with heavy writers)")


@dataclasses.dataclass(frozen=True)
class _Staging:
    """Where a staged object's bytes are: ``path`` in the staging ``directory`` (a descriptor), for key
    path ``relative``. ``path`` is ``<work>.part``, or ``<work>/<name>`` when the file was made in a
    staging directory of its own, ``work``, meant to become its parent directory."""

    relative: str
    directory: int
    path: str
    work: str

    @property
    def part(self) -> str:
        return f"{self.work}.part"


def _load_syncfs():
    try:
        call = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int]
    call.restype = ctypes.c_int
    return call


_syncfs = _load_syncfs()

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
        self._root_fd: int | None = None  # the root opened for syncfs (barrier)
        self._known_dirs: set[str] = set()  # relative paths of directories seen to exist: a hint only
        self._staging_lock = threading.Lock()
        self._open_fds: list[int] = []  # staging directories opened, closed with the backend
        weakref.finalize(self, _close_all, self._open_fds)
        self._token = secrets.token_hex(6)
        self._names = itertools.count()
        self.url = f"file://{self.root}"
        self.capabilities = Capabilities(empty_prefixes=True, default_concurrency=8, local=True, local_root=self._root,
                                         staged_puts=options.fsync and options.group_commit and _syncfs is not None)
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
        staged = self._stage(key, data, before_commit, fsync=self.options.fsync)
        return self._publish(staged, fsync=self.options.fsync)

    def stage(self, key: str, data: BinaryIO, *, size: int | None = None,
              before_commit: BeforeCommit | None = None) -> StagedObject:
        """The bytes in a staging file, not fsynced (see :class:`~backends.base.StagedPuts`)."""
        return self._stage(key, data, before_commit, fsync=False)

    def publish(self, staged: StagedObject) -> ObjectInfo:
        """The staging file renamed to its key (with the directories it needs), no directory fsynced."""
        return self._publish(staged, fsync=False)

    def discard(self, staged: StagedObject) -> None:
        handle: _Staging = staged.handle  # type: ignore[assignment]
        for name in (handle.work, f"{handle.work}.d", handle.part):
            _remove_entry(handle.directory, name)

    def barrier(self) -> None:
        """``syncfs(2)`` on the root's filesystem: every file and directory written there before the call is
        durable when it returns (the staging directory is on the same filesystem, checked when it is opened)."""
        fd = self._barrier_fd()
        if _syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise BackendError(f"{self.root}: syncfs failed: {os.strerror(code)}", key="")

    def _barrier_fd(self) -> int:
        fd = self._root_fd
        if fd is None:
            with self._staging_lock:
                if self._root_fd is None:
                    self._root_fd = os.open(self._real_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                    self._open_fds.append(self._root_fd)
                fd = self._root_fd
        return fd

    def _stage(self, key: str, data: BinaryIO, before_commit: BeforeCommit | None, *, fsync: bool) -> StagedObject:
        """The bytes in a new staging file, checked. When the key's directory is not known to exist, the
        file is made inside a new staging directory that stands for it (``work``), so that publishing it
        is likely one rename; else it is a plain file (``part``)."""
        relative = self._relative(key)
        parent, _, name = relative.rpartition("/")
        work = f"{_writer()}.{self._token}.{next(self._names)}"  # unique: no other writer uses this name
        in_work = bool(parent) and parent not in self._known_dirs
        handle = _Staging(relative, -1, f"{work}/{name}" if in_work else f"{work}.part", work)
        try:
            with self._translating(key):
                staging, fd = self._create(handle.path, work if in_work else None)
            handle = dataclasses.replace(handle, directory=staging)
            written = self._write_file(fd, data, key, fsync=fsync)
            if before_commit is not None:
                before_commit()
        except BaseException:
            if handle.directory >= 0:  # only what this put created: the names are its own
                _remove_entry(handle.directory, work if in_work else handle.path)
            raise
        return StagedObject(key, written, handle)

    def _publish(self, staged: StagedObject, *, fsync: bool) -> ObjectInfo:
        handle: _Staging = staged.handle  # type: ignore[assignment]
        try:
            with self._translating(staged.key):
                self._move_into_place(handle, fsync=fsync)
        except BaseException:
            self.discard(staged)
            raise
        return ObjectInfo(staged.key, staged.size)

    def _create(self, path: str, directory: str | None) -> tuple[int, int]:
        """The staging directory, and the temporary file ``path`` created in it (in a new directory
        ``directory`` when given); a staging directory removed meanwhile is made again."""
        staging = self._prepare_staging()
        try:
            return staging, self._create_in(staging, path, directory)
        except FileNotFoundError:
            staging = self._prepare_staging(stale=staging)
            return staging, self._create_in(staging, path, directory)

    def _create_in(self, staging: int, path: str, directory: str | None) -> int:
        if directory is not None:
            os.mkdir(directory, dir_fd=staging)
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666, dir_fd=staging)
        except BaseException:
            if directory is not None:
                _remove_entry(staging, directory)
            raise

    def _write_file(self, fd: int, data: BinaryIO, key: str, *, fsync: bool) -> int:
        """Copy ``data`` to ``fd`` and close it; errors of the caller's stream propagate untranslated."""
        written = 0
        try:
            while chunk := data.read(_COPY_BUFFER):
                view = memoryview(chunk)
                while view:
                    with self._translating(key):
                        view = view[os.write(fd, view):]
                written += len(chunk)
            if fsync:
                with self._translating(key):
                    os.fsync(fd)
        finally:
            os.close(fd)
        return written

    def _move_into_place(self, handle: _Staging, *, fsync: bool) -> None:
        """Rename the staged file to its key, bringing missing directories with it.

        Either one rename into the parent directory, opened without following
        links, or, when the parent is missing, the file's staging directory
        (``work``, made now if the file was staged outside one) renamed into
        place as the parent, inside any further missing directories built
        around it in staging: one step, so a new directory is never visible
        empty. ``fsync``: the directory that changed is fsynced after the rename.
        """
        staging, work = handle.directory, handle.work
        parent, _, name = handle.relative.rpartition("/")
        flags = (os.O_RDONLY | os.O_DIRECTORY) if fsync else DIRECTORY_HANDLE
        in_work = handle.path != handle.part
        try_parent = not in_work  # a file staged in its own directory was thought to need a new parent
        for _ in range(_PUT_ATTEMPTS):
            if try_parent and self._rename_into_parent(staging, handle.path, parent, name, flags, fsync):
                if in_work:
                    os.rmdir(work, dir_fd=staging)
                return
            try_parent = True
            if not in_work:
                os.mkdir(work, dir_fd=staging)
                os.rename(handle.path, f"{work}/{name}", src_dir_fd=staging, dst_dir_fd=staging)
                handle, in_work = dataclasses.replace(handle, path=f"{work}/{name}"), True
            if self._build_into_place(staging, work, parent, flags, fsync):
                self._remember(parent)
                return
        raise TransientError(f"{handle.relative}: directories kept changing under a concurrent writer", key=handle.relative)

    def _rename_into_parent(self, staging: int, path: str, parent: str, name: str, flags: int, fsync: bool) -> bool:
        """Rename staging ``path`` to ``parent/name``; False when ``parent`` does not exist (now)."""
        try:
            parent_fd = self._open(parent, flags)
        except FileNotFoundError:
            self._known_dirs.discard(parent)
            return False
        except NotADirectoryError as exc:
            raise self._in_the_way(parent) from exc
        try:
            os.rename(path, name, src_dir_fd=staging, dst_dir_fd=parent_fd)
            if fsync:
                os.fsync(parent_fd)
        except FileNotFoundError:
            self._known_dirs.discard(parent)
            return False  # the directory was removed meanwhile (a concurrent delete): start over
        except IsADirectoryError as exc:
            raise BackendError(f"{parent}/{name}: a directory is in the way", key=f"{parent}/{name}") from exc
        finally:
            os.close(parent_fd)
        self._remember(parent)
        return True

    def _build_into_place(self, staging: int, work: str, parent: str, flags: int, fsync: bool) -> bool:
        """Rename staging directory ``work`` to ``parent``, inside the missing directories above it, built
        around it in staging; False when a concurrent writer made one of them meanwhile (the file
        is left in ``work``)."""
        ancestor_fd, missing, below = self._deepest_existing(parent, flags)
        try:
            top = inner = work
            if below:
                top = inner = f"{work}.d"
                os.mkdir(top, dir_fd=staging)
                for component in below[:-1]:
                    inner = f"{inner}/{component}"
                    os.mkdir(inner, dir_fd=staging)
                inner = f"{inner}/{below[-1]}"
                os.rename(work, inner, src_dir_fd=staging, dst_dir_fd=staging)
            try:
                os.rename(top, missing, src_dir_fd=staging, dst_dir_fd=ancestor_fd)
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOENT, errno.ENOTDIR):
                    raise
                if below:
                    os.rename(inner, work, src_dir_fd=staging, dst_dir_fd=staging)
                    shutil.rmtree(top, ignore_errors=True, dir_fd=staging)
                return False
            if fsync:
                os.fsync(ancestor_fd)
            return True
        finally:
            os.close(ancestor_fd)

    def _remember(self, directory: str) -> None:
        """Note a directory seen to exist (a hint for :meth:`_stage`, never trusted for safety)."""
        known = self._known_dirs
        if len(known) >= _KNOWN_DIRS:
            known.clear()
        known.add(directory)

    def _deepest_existing(self, directory: str, flags: int) -> tuple[int, str, list[str]]:
        """For a missing ``directory``: its deepest existing ancestor (opened with ``flags``), the name of
        the topmost missing directory in it, and the components below that one."""
        parts = directory.split("/")
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
            self._staging_fd = self._root_fd = None
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
