"""Opening a path below a directory without following any symbolic link on the way.

``open_beneath(root, relative, flags)`` opens ``root/relative`` so that no
component of ``relative`` -- directory or final name -- is followed when it is
a symbolic link: it fails with ``ELOOP`` instead. ``root`` itself is resolved
as usual (it may be reached through links: ``/srv/registry -> /data/registry``).

On Linux 5.6 and later this is one system call, ``openat2`` with
``RESOLVE_NO_SYMLINKS``: the kernel checks every component while it resolves
the path, so there is no window between a check and the open. Elsewhere (older
kernels, seccomp profiles that refuse ``openat2``) each directory is opened in
turn relative to the previous one with ``O_NOFOLLOW`` -- as safe, and one
system call per component. Python's ``os`` has no ``openat2``; it is called
through ``ctypes``.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import stat
import sys

_OPENAT2_MACHINES = {"x86_64", "i686", "aarch64", "armv7l", "ppc64le", "s390x", "riscv64"}  # where it is call 437
_SYS_OPENAT2 = 437 if sys.platform == "linux" and os.uname().machine in _OPENAT2_MACHINES else None
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_AT_FDCWD = -100
_O_PATH = getattr(os, "O_PATH", 0)
DIRECTORY_HANDLE = (_O_PATH or os.O_RDONLY) | os.O_DIRECTORY | os.O_CLOEXEC
"""Flags for a directory opened only to name paths relative to it (no read permission needed)."""


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _load_openat2():
    if _SYS_OPENAT2 is None:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syscall = libc.syscall
    except (OSError, AttributeError):
        return None
    syscall.restype = ctypes.c_long
    syscall.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
    return syscall


_HOW_SIZE = ctypes.sizeof(_OpenHow)


@functools.lru_cache(maxsize=64)
def _how(flags: int, mode: int):
    """The ``open_how`` argument for these flags (built once: a handful of combinations are used)."""
    return ctypes.byref(_OpenHow(flags, mode, _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS))


_syscall = _load_openat2()
use_openat2 = _syscall is not None
"""Whether ``openat2`` is tried; set to False to use the component walk (tests do, to cover it)."""


def open_beneath(root: str, relative: str, flags: int, mode: int = 0o666) -> int:
    """A file descriptor of ``root/relative`` (``relative`` may be ""), opened with ``flags``.

    ``root`` must be a real path (``os.path.realpath``: no link anywhere in
    it); resolve it once, when the directory is chosen. Raises OSError:
    ``ELOOP`` when a component of ``relative`` is a symbolic link (the last one
    too, except that with ``O_PATH`` the link itself may be opened: check
    ``fstat``), otherwise what ``open`` raises.
    """
    global use_openat2
    flags |= os.O_CLOEXEC
    if use_openat2:
        path = f"{root}/{relative}" if relative else root
        how = _how(flags, mode if flags & os.O_CREAT else 0)
        fd = _syscall(_SYS_OPENAT2, _AT_FDCWD, os.fsencode(path), how, _HOW_SIZE)
        if fd >= 0:
            return fd
        code = ctypes.get_errno()
        if code not in (errno.ENOSYS, errno.EPERM):
            raise OSError(code, os.strerror(code), path)
        fd = _walk(root, relative, flags, mode)  # raises the real error if there is one
        use_openat2 = False  # refused by the kernel or a seccomp profile: walk from now on
        return fd
    return _walk(root, relative, flags, mode)


def _walk(root: str, relative: str, flags: int, mode: int) -> int:
    if not relative:
        return os.open(root, flags, mode)
    *directories, name = relative.split("/")
    fd = os.open(root, DIRECTORY_HANDLE)
    try:
        for component in directories:
            try:
                inner = os.open(component, DIRECTORY_HANDLE | os.O_NOFOLLOW, dir_fd=fd)
            except NotADirectoryError:
                _raise_if_symlink(component, fd)
                raise
            os.close(fd)
            fd = inner
        try:
            return os.open(name, flags | os.O_NOFOLLOW, mode, dir_fd=fd)
        except NotADirectoryError:
            if flags & os.O_DIRECTORY:
                _raise_if_symlink(name, fd)
            raise
    finally:
        os.close(fd)


def _raise_if_symlink(name: str, dir_fd: int) -> None:
    """``O_PATH | O_NOFOLLOW | O_DIRECTORY`` says ENOTDIR for a link: tell a link from a file."""
    try:
        is_link = stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return
    if is_link:
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), name)


__all__ = ["DIRECTORY_HANDLE", "open_beneath"]
