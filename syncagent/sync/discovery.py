"""Reading a registry tree on any backend: repositories, tags, revisions and links.

Listings stream. Links that are empty or do not parse are re-read a few times
before they are given up on: registry 2.8's filesystem driver rewrites a link in
place (truncate, then write), so a reader can catch it half-written. Reads
that fail transiently (a lost connection, an answer cut short) are retried by
the retry wrapper around a run's backends (backends/retry.py).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from backends import Backend, BackendError, ConfigurationError, Entry, NotFound, ObjectInfo, SymlinkRefused

from .layout import (
    REPOSITORIES_PREFIX,
    ROOT,
    ROOT_NAME,
    ROOT_PARENT,
    Digest,
    InvalidPath,
    RevisionLink,
    TagCurrentLink,
    format_link,
    is_digest_algorithm,
    key_of,
    parse_link,
    revisions_prefix,
    tags_prefix,
    validate_repository,
    validate_repository_component,
    validate_tag,
)
from .report import Problem

LINK_READ_ATTEMPTS = 5
LINK_RETRY_DELAY = 0.02

OnProblem = Callable[[Problem], None]


def _ignore(problem: Problem) -> None:
    pass


class NotARegistry(ConfigurationError):
    """The backend holds no registry tree: a path or prefix that is not a registry's root directory."""


def require_registry(backend: Backend) -> None:
    """Raise NotARegistry unless ``backend`` holds ``docker/registry/v2``.

    On a filesystem that is the directory (an empty registry has it); on
    stores without empty prefixes (S3, RADOS) at least one object below it.
    So a path or prefix mistyped into a parent directory, or one that does not
    exist, is an error, not a healthy empty replica. A fresh destination is
    not asked this: it is legitimately empty; nor is one that carries
    syncagent's replica marker (a replica whose first pass published nothing yet).
    """
    found = False
    try:
        for entry in backend.iter_children(ROOT_PARENT + "/"):
            found = found or (entry.is_prefix and entry.name == ROOT_NAME)
    except NotFound as exc:
        raise NotARegistry(f"{backend.url} does not exist") from exc
    except SymlinkRefused as exc:
        if not found:
            raise NotARegistry(f"no {ROOT} in {backend.url}: {exc}") from exc
    if not found and not _marked_replica(backend):
        raise NotARegistry(
            f"no {ROOT} in {backend.url}: not a registry's storage root (give the directory or prefix holding docker/)"
        )


def _marked_replica(backend: Backend) -> bool:
    from .replica import MARKER_KEY  # replica.py reads repositories with this module

    try:
        backend.stat(MARKER_KEY)
    except BackendError:
        return False
    return True


class UnreadableLink(Exception):
    """A link stayed empty or malformed across every re-read."""


def read_link(backend: Backend, key: str, *, attempts: int = LINK_READ_ATTEMPTS) -> Digest:
    """The digest stored at ``key``; raises NotFound, or UnreadableLink after ``attempts`` reads."""
    delay = LINK_RETRY_DELAY
    last: InvalidPath | None = None
    for attempt in range(attempts):
        data = read_small(backend, key, 4096)
        try:
            return parse_link(data)
        except InvalidPath as exc:
            last = exc
        if attempt + 1 < attempts:
            time.sleep(delay)
            delay *= 2
    raise UnreadableLink(f"{last} (read {attempts} times)")


def read_small(backend: Backend, key: str, limit: int) -> bytes:
    """At most ``limit`` + 1 bytes of an object (callers check for the excess), in one ``read_prefix``.

    The bytes returned are the object's (a backend's stream never ends early:
    see ``Backend.open_read``). A read that fails or comes up short raises
    TransientError; the retry wrapper (backends/retry.py) around the backends
    of a run reads again.
    """
    return backend.read_prefix(key, limit + 1)


def list_children(backend: Backend, prefix: str, on_problem: OnProblem = _ignore, **where) -> list[Entry]:
    """The children of ``prefix``; symbolic links the backend refuses are reported (``symlink-refused``,
    with ``where``: repository, tag...) and left out, the rest is listed."""
    children: list[Entry] = []
    try:
        for entry in backend.iter_children(prefix):
            children.append(entry)
    except SymlinkRefused as exc:
        report_symlinks(exc, on_problem, **where)
    return children


def objects_under(backend: Backend, prefix: str, on_problem: OnProblem = _ignore, **where) -> Iterator[ObjectInfo]:
    """``backend.iter_objects(prefix)``, with the symbolic links it refuses reported as ``list_children`` does."""
    try:
        yield from backend.iter_objects(prefix)
    except SymlinkRefused as exc:
        report_symlinks(exc, on_problem, **where)


def report_symlinks(exc: SymlinkRefused, on_problem: OnProblem, **where) -> None:
    """One ``symlink-refused`` problem per link the backend named."""
    for key in exc.keys:
        on_problem(Problem("symlink-refused", "a symbolic link: never followed, nothing read through it", key=key, **where))


def iter_repositories(backend: Backend, on_problem: OnProblem = _ignore) -> Iterator[str]:
    """Every repository name under ``repositories/``, nested names included, in sorted order.

    A directory is a repository when it holds ``_manifests``, ``_layers`` or
    ``_uploads``; it may also hold nested repositories. Names outside the
    grammar, and symbolic links, are reported and not descended into.
    """
    stack: list[str] = [""]
    while stack:
        name = stack.pop()
        prefix = REPOSITORIES_PREFIX + (name + "/" if name else "")
        children = sorted(list_children(backend, prefix, on_problem), key=lambda e: e.name, reverse=True)
        is_repository = False
        nested: list[str] = []
        for entry in children:
            if not entry.is_prefix:
                continue
            if entry.name.startswith("_"):
                is_repository = is_repository or entry.name in ("_manifests", "_layers", "_uploads")
                continue
            full = f"{name}/{entry.name}" if name else entry.name
            try:
                validate_repository_component(entry.name)
                validate_repository(full)
            except InvalidPath as exc:
                on_problem(Problem("invalid-name", str(exc), key=prefix + entry.name))
                continue
            nested.append(full)
        if is_repository and name:
            yield name
        stack.extend(nested)


@dataclass
class RepositoryState:
    """What one repository holds on one backend: tag -> digest, and revision digests."""

    name: str
    tags: dict[str, Digest] = field(default_factory=dict)
    revisions: set[Digest] = field(default_factory=set)


def read_repository(backend: Backend, repository: str, on_problem: OnProblem = _ignore, *,
                    expected_tags: dict[str, Digest] | None = None) -> RepositoryState:
    """Tags (with their current digests) and revisions; bad entries are reported and left out.

    On stores whose listings carry MD5 hints, one recursive listing each of the
    revisions and of the tags stands in for reading every link whose content
    is known: a revision link holds its own digest, and a tag's ``current/link``
    holds one of the repository's revisions -- the one whose link's MD5 its
    hint is (or ``expected_tags[tag]``: pass the other side's tags). So a
    repository costs a few listings, not a GET per tag. Every other link is read.
    """
    state = RepositoryState(repository)
    hinted = getattr(backend.capabilities, "listing_md5", False)
    if hinted:
        candidates = _revisions_listed(backend, repository, on_problem)
    else:
        candidates = _revisions_walked(backend, repository, on_problem)
    for digest, hint in candidates:
        if _vouches(hint, digest):
            state.revisions.add(digest)  # the listing vouches for the link's content
            continue
        key = key_of(RevisionLink(repository, digest))
        try:
            content = read_link(backend, key)
        except NotFound:
            continue  # a directory without its link: a revision being written or deleted
        except UnreadableLink as exc:
            on_problem(Problem("invalid-link", str(exc), repository=repository, digest=str(digest), key=key))
            continue
        except SymlinkRefused as exc:
            report_symlinks(exc, on_problem, repository=repository, digest=str(digest))
            continue
        if content != digest:
            on_problem(Problem("invalid-link", f"revision link holds {content}", repository=repository, digest=str(digest), key=key))
            continue
        state.revisions.add(digest)
    revision_hints = _hints_of(state.revisions) if hinted else {}
    tags = _tags_listed(backend, repository, on_problem) if hinted else _tags_walked(backend, repository, on_problem)
    for tag, hint in tags:
        try:
            validate_tag(tag)
        except InvalidPath as exc:
            on_problem(Problem("invalid-name", str(exc), repository=repository, key=tags_prefix(repository) + tag))
            continue
        expected = (expected_tags or {}).get(tag)
        if expected is not None and _vouches(hint, expected):
            state.tags[tag] = expected  # the listing vouches for the link's content
            continue
        vouched = revision_hints.get(hint) if hint is not None else None
        if vouched is not None:
            state.tags[tag] = vouched  # the link holds that revision's digest, by its hint
            continue
        key = key_of(TagCurrentLink(repository, tag))
        try:
            state.tags[tag] = read_link(backend, key)
        except NotFound:
            on_problem(Problem("missing-link", "tag has no current/link", repository=repository, tag=tag, key=key))
        except UnreadableLink as exc:
            on_problem(Problem("invalid-link", str(exc), repository=repository, tag=tag, key=key))
        except SymlinkRefused as exc:
            report_symlinks(exc, on_problem, repository=repository, tag=tag)
    return state


def _hints_of(digests: set[Digest]) -> dict[tuple[str, int], Digest]:
    """The (MD5, size) hint a link holding each digest is listed with -> that digest."""
    hints = {}
    for digest in digests:
        content = format_link(digest)
        hints[(hashlib.md5(content).hexdigest(), len(content))] = digest
    return hints


def _vouches(hint: tuple[str | None, int] | None, digest: Digest) -> bool:
    """Whether a listing's (MD5 hint, size) says the link holds exactly ``digest``."""
    if hint is None or hint[0] is None:
        return False
    content = format_link(digest)
    return hint[1] == len(content) and hint[0] == hashlib.md5(content).hexdigest()


def _tags_walked(backend: Backend, repository: str, on_problem: OnProblem) -> Iterator[tuple[str, None]]:
    """The tags of a repository: its tag directories."""
    for entry in list_children(backend, tags_prefix(repository), on_problem, repository=repository):
        if entry.is_prefix:
            yield entry.name, None


def _tags_listed(backend: Backend, repository: str, on_problem: OnProblem) -> Iterator[tuple[str, tuple[str | None, int] | None]]:
    """The tags of a repository from one recursive listing, with their current links' MD5 hints."""
    prefix = tags_prefix(repository)
    hints: dict[str, tuple[str | None, int] | None] = {}
    for info in objects_under(backend, prefix, on_problem, repository=repository):
        tag, _, rest = info.key[len(prefix):].partition("/")
        if not rest:
            continue  # an object beside the tag directories, not a tag
        if rest == "current/link":
            hints[tag] = (info.md5, info.size)
        else:
            hints.setdefault(tag, None)
    yield from hints.items()


def _revisions_walked(backend: Backend, repository: str, on_problem: OnProblem) -> Iterator[tuple[Digest, None]]:
    """The revision digests a repository's directories name, one listing per algorithm."""
    for algorithm_entry in list_children(backend, revisions_prefix(repository), on_problem, repository=repository):
        if not algorithm_entry.is_prefix:
            continue
        if not is_digest_algorithm(algorithm_entry.name):
            on_problem(Problem("invalid-name", f"unsupported digest algorithm {algorithm_entry.name[:20]!r}",
                               repository=repository, key=revisions_prefix(repository) + algorithm_entry.name))
            continue
        prefix = revisions_prefix(repository, algorithm_entry.name)
        for entry in list_children(backend, prefix, on_problem, repository=repository):
            if not entry.is_prefix:
                continue
            try:
                yield Digest.of(algorithm_entry.name, entry.name), None
            except InvalidPath as exc:
                on_problem(Problem("invalid-name", str(exc), repository=repository, key=prefix + entry.name))


def _revisions_listed(backend: Backend, repository: str, on_problem: OnProblem) -> Iterator[tuple[Digest, tuple[str | None, int]]]:
    """The revision links of a repository from one recursive listing, with their MD5 hints."""
    prefix = revisions_prefix(repository)
    for info in objects_under(backend, prefix, on_problem, repository=repository):
        parts = info.key[len(prefix):].split("/")
        if len(parts) != 3 or parts[2] != "link":
            continue
        try:
            yield Digest.of(parts[0], parts[1]), (info.md5, info.size)
        except InvalidPath as exc:
            on_problem(Problem("invalid-name", str(exc), repository=repository, key=f"{prefix}{parts[0]}/{parts[1]}"))
