"""The steps a plan is made of: what the executor orders and a performer carries out.

Each step is a frozen record naming what it writes, reads or deletes, and
``needs``: the positions in its plan of the steps that must have succeeded
before it runs (always earlier positions). Sync steps, in the order a
manifest needs them: :class:`CopyBlob` or :class:`AwaitBlob`,
:class:`LinkLayers`, :class:`LinkRevision`, then per tag :class:`ReadBack` and
:class:`PublishTag`; :class:`CheckHistory` after a pass that died. Delete
steps, in reverse dependency order: :class:`DeleteTag` (history links first,
``current/link`` last), :class:`DeleteRevision`, :class:`DeleteLayerLink`.
With blobs replicated by the storage, a sync plan also takes back what the
primary's garbage collection broke: :class:`UnpublishTag`, then
:class:`UnpublishRevision`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from .closure import Closure
from .layout import Digest, LayerLink, RevisionLink, TagCurrentLink, TagIndexLink, key_of
from .report import Problem


@dataclass(frozen=True)
class CopyBlob:
    """Make blob data present on the destination: copied from the source unless already there with
    the right size. ``content``: the bytes, when the plan has them (manifests). ``optional``: a
    foreign layer, which may be absent from storage. ``fresh``: look at the destination again even if
    this pass already confirmed the blob (repair)."""

    digest: Digest
    label: str = "blob"
    content: bytes | None = field(default=None, repr=False)
    optional: bool = False
    fresh: bool = False
    size: int | None = None  # the descriptor's size, or the content's length; None where unknown
    needs: tuple[int, ...] = ()


@dataclass(frozen=True)
class AwaitBlob:
    """Wait until the storage's replication has brought blob data to the destination (size checked,
    and the ETag where both sides report one); with ``copy_after``, copy it after that many seconds."""

    digest: Digest
    label: str = "blob"
    size: int | None = None
    optional: bool = False
    copy_after: float | None = None
    needs: tuple[int, ...] = ()


@dataclass(frozen=True)
class LinkLayers:
    """Write the ``_layers`` links of a manifest's config and layers (those present: an absent
    foreign layer gets none). Needs the blob steps."""

    repository: str
    manifest: Digest
    blobs: tuple[Digest, ...]
    needs: tuple[int, ...] = ()


@dataclass(frozen=True)
class LinkRevision:
    """Write a manifest's revision link. ``publishes``: a revision of the source the destination
    lacks (its failure is reported as ``revision-not-published``)."""

    repository: str
    digest: Digest
    publishes: bool = False
    needs: tuple[int, ...] = ()


@dataclass(frozen=True)
class ReadBack:
    """Read the closure of ``closure.root`` back on the destination (stat every blob, read every link).

    ``repair``: when something is lacking, write the whole closure again (fresh copies, every link)
    and read it back once more; ``force``: repair without looking first (known-damaged blobs).
    ``tag``: the read-back guards this tag's publication; else it checks an existing revision.
    """

    repository: str
    closure: Closure = field(repr=False, compare=False)
    repair: bool = False
    force: bool = False
    tag: str | None = None
    needs: tuple[int, ...] = ()

    @property
    def root(self) -> Digest:
        return self.closure.root


@dataclass(frozen=True)
class PublishTag:
    """Point the tag at ``digest``: ``current/link`` (atomically), then its history (index) link.
    ``recheck``: the tag was already current (a repair pass re-checks it)."""

    repository: str
    tag: str
    digest: Digest
    recheck: bool = False
    needs: tuple[int, ...] = ()


@dataclass(frozen=True)
class CheckHistory:
    """After a pass that did not finish: the history link of the digest the destination's tag points
    to, written if missing."""

    repository: str
    tag: str
    digest: Digest
    needs: tuple[int, ...] = ()


@dataclass(frozen=True)
class UnpublishTag:
    """With blobs replicated by the storage: take back a destination tag the source no longer has at
    ``digest`` (deleted, or moved elsewhere) once its closure on the destination is broken -- the
    primary's garbage collection deleted blobs it names, and the storage's replication carried those
    deletes over before the tag's own delete reached the destination.

    The closure is read back on the destination (as its own manifests describe it); only when it is
    broken, the destination's tag still points at ``digest`` and the source still does not, is every
    key under the tag removed, history links first and ``current/link`` last. A whole tag is left to
    ``--delete``."""

    repository: str
    tag: str
    digest: Digest
    needs: tuple[int, ...] = ()


@dataclass(frozen=True)
class UnpublishRevision:
    """As :class:`UnpublishTag`, for a revision link the source no longer has: removed only when its
    closure on the destination is broken. Needs the plan's UnpublishTag steps (tags go first)."""

    repository: str
    digest: Digest
    needs: tuple[int, ...] = ()


@dataclass(frozen=True)
class DeleteTag:
    """Remove a tag the source no longer has: every key under it (``keys``, in order: history links
    first, ``current/link`` last), unless the source has the tag again."""

    repository: str
    tag: str
    keys: tuple[str, ...]
    needs: tuple[int, ...] = ()


@dataclass(frozen=True)
class DeleteRevision:
    """Remove a revision link no remaining tag or manifest references, unless the source has it again."""

    repository: str
    digest: Digest
    needs: tuple[int, ...] = ()


@dataclass(frozen=True)
class DeleteLayerLink:
    """Remove a ``_layers`` link no remaining manifest references, unless the source has it again."""

    repository: str
    digest: Digest
    needs: tuple[int, ...] = ()


Step = Union[CopyBlob, AwaitBlob, LinkLayers, LinkRevision, ReadBack, PublishTag, CheckHistory,
             UnpublishTag, UnpublishRevision, DeleteTag, DeleteRevision, DeleteLayerLink]
BLOB_STEPS = (CopyBlob, AwaitBlob)


@dataclass
class RepositoryPlan:
    """Steps in dependency order (every step after those it needs); problems found while planning;
    counts of what the plan leaves alone because it is up to date."""

    repository: str
    steps: list[Step] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    up_to_date: dict[str, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.steps


def plan_lines(step: Step) -> list[str]:
    """What a printed plan (``--dry-run``) says of a step: a line per write or delete."""
    if isinstance(step, CopyBlob):
        size = "" if step.size is None else f" ({step.size} bytes)"
        return [f"copy blob {step.digest}{size} unless present"]
    if isinstance(step, AwaitBlob):
        return [f"await blob {step.digest} (replicated by the storage)"]
    if isinstance(step, LinkLayers):
        return [f"link {key_of(LayerLink(step.repository, digest))} -> {digest}" for digest in step.blobs]
    if isinstance(step, LinkRevision):
        return [f"link {key_of(RevisionLink(step.repository, step.digest))} -> {step.digest}"]
    if isinstance(step, ReadBack):
        return [f"read back {step.repository}@{step.root}" + (" (repair if lacking)" if step.repair else "")]
    if isinstance(step, PublishTag):
        return [f"link {key_of(TagCurrentLink(step.repository, step.tag))} -> {step.digest}",
                f"link {key_of(TagIndexLink(step.repository, step.tag, step.digest))} -> {step.digest}"]
    if isinstance(step, CheckHistory):
        return [f"check {key_of(TagIndexLink(step.repository, step.tag, step.digest))}"]
    if isinstance(step, UnpublishTag):
        return [f"unpublish {step.repository}:{step.tag} if its closure ({step.digest}) is broken on the destination"]
    if isinstance(step, UnpublishRevision):
        return [f"unpublish {step.repository}@{step.digest} if its closure is broken on the destination"]
    if isinstance(step, DeleteTag):
        return [f"delete {key}" for key in step.keys]
    if isinstance(step, DeleteRevision):
        return [f"delete {key_of(RevisionLink(step.repository, step.digest))}"]
    if isinstance(step, DeleteLayerLink):
        return [f"delete {key_of(LayerLink(step.repository, step.digest))}"]
    raise TypeError(f"not a step: {step!r}")


__all__ = [
    "AwaitBlob", "BLOB_STEPS", "CheckHistory", "CopyBlob", "DeleteLayerLink", "DeleteRevision", "DeleteTag",
    "LinkLayers", "LinkRevision", "PublishTag", "ReadBack", "RepositoryPlan", "Step", "UnpublishRevision", "UnpublishTag",
    "plan_lines",
]
