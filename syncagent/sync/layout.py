"""The registry storage layout: typed path specs, their keys, and name/tag/digest validation.

This is the one place that builds or parses storage keys (distribution's
``registry/storage/paths.go``). Everything lives below ``docker/registry/v2/``::

    blobs/<alg>/<hex[:2]>/<hex>/data                                BlobData
    repositories/<name>/_layers/<alg>/<hex>/link                    LayerLink
    repositories/<name>/_manifests/revisions/<alg>/<hex>/link       RevisionLink
    repositories/<name>/_manifests/tags/<tag>/current/link          TagCurrentLink
    repositories/<name>/_manifests/tags/<tag>/index/<alg>/<hex>/link TagIndexLink

Anything that does not parse -- uploads in progress, temporary files, names
outside the grammar (which is also how path traversal is refused) -- raises
:class:`InvalidPath` and is never written.

Messages may quote keys and names (they come from listings), never what a
file holds: content that does not parse is described by :func:`describe_content`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Iterator, Union

ROOT = "docker/registry/v2"
ROOT_PARENT, _, ROOT_NAME = ROOT.rpartition("/")
BLOBS_PREFIX = f"{ROOT}/blobs/"
REPOSITORIES_PREFIX = f"{ROOT}/repositories/"

MAX_REPOSITORY_LENGTH = 255
LINK_MAX_BYTES = 1024

_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
_HEX = re.compile(r"[0-9a-f]+")
_REPOSITORY_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


class InvalidPath(ValueError):
    """A name, tag, digest, link or key that is not part of the registry layout."""


def describe_content(data: bytes | str) -> str:
    """How a report names content it must not quote (it may be a secret planted in a link or a
    manifest): its length and the first hex digits of its SHA-256, e.g. ``412 bytes (sha256 3f2a9c01d4e5)``."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    return f"{len(raw)} bytes (sha256 {hashlib.sha256(raw).hexdigest()[:12]})"


@dataclass(frozen=True, order=True)
class Digest:
    """A content digest such as ``sha256:<64 hex>``."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> "Digest":
        """A digest from text read from storage or the network; the message never quotes ``text``."""
        algorithm, sep, hexpart = text.partition(":")
        why = _why_not(algorithm, hexpart) if sep else "no algorithm"
        if why is not None:
            raise InvalidPath(f"{describe_content(text)} that are not a digest ({why})")
        return cls(algorithm, hexpart)

    @classmethod
    def of(cls, algorithm: str, hexpart: str) -> "Digest":
        """A digest from the components of a key (quoted in the message: keys may be named)."""
        why = _why_not(algorithm, hexpart)
        if why is not None:
            raise InvalidPath(f"{why}: {algorithm[:20]!r}, {hexpart[:140]!r}")
        return cls(algorithm, hexpart)

    def hasher(self):
        return hashlib.new(self.algorithm)

    @property
    def short(self) -> str:
        return f"{self.algorithm}:{self.hex[:12]}"

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def _why_not(algorithm: str, hexpart: str) -> str | None:
    """Why these are not a digest's algorithm and hex (without quoting them), or None."""
    length = _HEX_LENGTHS.get(algorithm)
    if length is None:
        return "unsupported digest algorithm"
    if len(hexpart) != length or not _HEX.fullmatch(hexpart):
        return f"a {algorithm} digest is {length} lowercase hex digits"
    return None


def _raw_bytes(digest: Digest) -> bytes:
    """A digest's bytes: the key of the compact tables below (the algorithm follows from the length)."""
    return bytes.fromhex(digest.hex)


class DigestSet:
    """A compact set of digests (their raw bytes: about 90 bytes an entry), for per-pass bookkeeping
    that must stay small whatever the registry's size."""

    def __init__(self) -> None:
        self._raw: set[bytes] = set()

    def add(self, digest: Digest) -> None:
        self._raw.add(_raw_bytes(digest))

    def discard(self, digest: Digest) -> None:
        self._raw.discard(_raw_bytes(digest))

    def __contains__(self, digest: object) -> bool:
        return isinstance(digest, Digest) and _raw_bytes(digest) in self._raw

    def __len__(self) -> int:
        return len(self._raw)


_ALGORITHM_OF_RAW_LENGTH = {length // 2: algorithm for algorithm, length in _HEX_LENGTHS.items()}


class DigestSizes:
    """Sizes by digest, compactly (raw digest bytes to size: about 100 bytes an entry), for a listing
    of every blob that must stay small whatever the registry's size."""

    def __init__(self) -> None:
        self._sizes: dict[bytes, int] = {}

    def __setitem__(self, digest: Digest, size: int) -> None:
        self._sizes[_raw_bytes(digest)] = size

    def __getitem__(self, digest: Digest) -> int:
        return self._sizes[_raw_bytes(digest)]

    def __contains__(self, digest: object) -> bool:
        return isinstance(digest, Digest) and _raw_bytes(digest) in self._sizes

    def __len__(self) -> int:
        return len(self._sizes)

    def items(self) -> Iterator[tuple[Digest, int]]:
        for raw, size in self._sizes.items():
            yield Digest(_ALGORITHM_OF_RAW_LENGTH[len(raw)], raw.hex()), size


class LinkMemo:
    """Links this pass wrote or read, each with the digest it holds, compactly: a 16-byte BLAKE2b of
    key and digest an entry (about 80 bytes, where the key and a Digest take about 500). A false
    "confirmed" needs a 128-bit collision."""

    def __init__(self) -> None:
        self._seen: set[bytes] = set()

    @staticmethod
    def _entry(key: str, digest: Digest) -> bytes:
        return hashlib.blake2b(f"{key}\0{digest}".encode(), digest_size=16).digest()

    def confirm(self, key: str, digest: Digest) -> None:
        self._seen.add(self._entry(key, digest))

    def holds(self, key: str, digest: Digest) -> bool:
        """True when this pass saw ``key`` hold ``digest``."""
        return self._entry(key, digest) in self._seen

    def __len__(self) -> int:
        return len(self._seen)


def validate_repository(name: str) -> str:
    """Return ``name`` if it is a valid repository name, else raise InvalidPath."""
    if not name or len(name) > MAX_REPOSITORY_LENGTH:
        raise InvalidPath(f"repository name must be 1-{MAX_REPOSITORY_LENGTH} characters: {name[:300]!r}")
    for component in name.split("/"):
        if not _REPOSITORY_COMPONENT.fullmatch(component):
            raise InvalidPath(f"invalid repository name {name[:300]!r} (component {component[:100]!r})")
    return name


def validate_repository_component(component: str) -> str:
    if not _REPOSITORY_COMPONENT.fullmatch(component):
        raise InvalidPath(f"invalid repository name component {component[:100]!r}")
    return component


def validate_tag(tag: str) -> str:
    if not _TAG.fullmatch(tag):
        raise InvalidPath(f"invalid tag {tag[:200]!r}")
    return tag


@dataclass(frozen=True)
class BlobData:
    digest: Digest


@dataclass(frozen=True)
class LayerLink:
    repository: str
    digest: Digest


@dataclass(frozen=True)
class RevisionLink:
    repository: str
    digest: Digest


@dataclass(frozen=True)
class TagCurrentLink:
    repository: str
    tag: str


@dataclass(frozen=True)
class TagIndexLink:
    repository: str
    tag: str
    digest: Digest


PathSpec = Union[BlobData, LayerLink, RevisionLink, TagCurrentLink, TagIndexLink]
Link = Union[LayerLink, RevisionLink, TagCurrentLink, TagIndexLink]


def repository_prefix(repository: str) -> str:
    return f"{REPOSITORIES_PREFIX}{validate_repository(repository)}/"


def tags_prefix(repository: str) -> str:
    return f"{repository_prefix(repository)}_manifests/tags/"


def is_digest_algorithm(name: str) -> bool:
    """Whether ``name`` is a digest algorithm of the layout (a directory name under revisions/ or _layers/)."""
    return name in _HEX_LENGTHS


def _algorithm_directory(algorithm: str) -> str:
    if not is_digest_algorithm(algorithm):
        raise InvalidPath(f"unsupported digest algorithm {algorithm[:20]!r}")
    return f"{algorithm}/"


def revisions_prefix(repository: str, algorithm: str | None = None) -> str:
    base = f"{repository_prefix(repository)}_manifests/revisions/"
    return base if algorithm is None else base + _algorithm_directory(algorithm)


def layers_prefix(repository: str, algorithm: str | None = None) -> str:
    base = f"{repository_prefix(repository)}_layers/"
    return base if algorithm is None else base + _algorithm_directory(algorithm)


def key_of(spec: PathSpec) -> str:
    """The storage key of a path spec; validates every part."""
    if isinstance(spec, BlobData):
        d = spec.digest
        return f"{BLOBS_PREFIX}{d.algorithm}/{d.hex[:2]}/{d.hex}/data"
    if isinstance(spec, LayerLink):
        return f"{layers_prefix(spec.repository, spec.digest.algorithm)}{spec.digest.hex}/link"
    if isinstance(spec, RevisionLink):
        return f"{revisions_prefix(spec.repository, spec.digest.algorithm)}{spec.digest.hex}/link"
    if isinstance(spec, TagCurrentLink):
        return f"{tags_prefix(spec.repository)}{validate_tag(spec.tag)}/current/link"
    if isinstance(spec, TagIndexLink):
        d = spec.digest
        return f"{tags_prefix(spec.repository)}{validate_tag(spec.tag)}/index/{d.algorithm}/{d.hex}/link"
    raise TypeError(f"not a path spec: {spec!r}")


def parse_key(key: str) -> PathSpec:
    """The path spec a storage key names; raises InvalidPath for anything else."""
    if key.startswith(BLOBS_PREFIX):
        parts = key[len(BLOBS_PREFIX):].split("/")
        if len(parts) == 4 and parts[3] == "data":
            digest = Digest.of(parts[0], parts[2])
            if parts[1] == digest.hex[:2]:
                return BlobData(digest)
        raise InvalidPath(f"not a blob data key: {key[:300]!r}")
    if not key.startswith(REPOSITORIES_PREFIX):
        raise InvalidPath(f"outside the registry layout: {key[:300]!r}")
    rest = key[len(REPOSITORIES_PREFIX):]
    for marker in ("/_layers/", "/_manifests/", "/_uploads/"):
        repository, sep, tail = rest.partition(marker)
        if not sep:
            continue
        validate_repository(repository)
        parts = tail.split("/")
        if marker == "/_layers/" and len(parts) == 3 and parts[2] == "link":
            return LayerLink(repository, Digest.of(parts[0], parts[1]))
        if marker == "/_manifests/":
            if len(parts) == 4 and parts[0] == "revisions" and parts[3] == "link":
                return RevisionLink(repository, Digest.of(parts[1], parts[2]))
            if len(parts) == 4 and parts[0] == "tags" and parts[2:] == ["current", "link"]:
                return TagCurrentLink(repository, validate_tag(parts[1]))
            if len(parts) == 6 and parts[0] == "tags" and parts[2] == "index" and parts[5] == "link":
                return TagIndexLink(repository, validate_tag(parts[1]), Digest.of(parts[3], parts[4]))
        break
    raise InvalidPath(f"not a registry object: {key[:300]!r}")


def format_link(digest: Digest) -> bytes:
    """A link file's content: the bare digest, no newline."""
    return str(digest).encode("ascii")


def parse_link(data: bytes) -> Digest:
    """The digest a link holds; raises InvalidPath for empty or malformed content."""
    if not data:
        raise InvalidPath("empty link")
    if len(data) > LINK_MAX_BYTES:
        raise InvalidPath(f"link of {describe_content(data)}: longer than {LINK_MAX_BYTES}")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidPath(f"link of {describe_content(data)}: not ASCII") from None
    try:
        return Digest.parse(text)
    except InvalidPath as exc:
        raise InvalidPath(f"link of {exc}") from None
