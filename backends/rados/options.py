"""The RADOS backend's options (``rados://POOL/NAMESPACE?name=value``), the limits it reads from the
cluster, and the sizes it works in."""

from __future__ import annotations

import dataclasses

from ..options import option

MIB = 1 << 20
IO_SIZE = 4 * MIB  # largest single read or write request (RGW's rgw_max_chunk_size)
PAGE = 1000  # omap entries per listing request
LISTING_READS = 8  # index pages a listing of everything below a prefix reads at a time
COMMIT_ATTEMPTS = 100
MARKS_REMEMBERED = 200_000  # prefixes a backend remembers as marked (about 30 MiB), then starts again


@dataclasses.dataclass(frozen=True)
class RadosOptions:
    conf: str = option("", "ceph.conf to read; empty: Ceph's search ($CEPH_CONF, /etc/ceph/$cluster.conf, ~/.ceph/$cluster.conf, ./$cluster.conf)")
    id: str = option("admin", "cephx user, without 'client.'")
    keyring: str = option("", "keyring file; empty: as ceph.conf says, else Ceph's defaults (/etc/ceph/$cluster.client.$id.keyring, ...)")
    cluster: str = option("ceph", "cluster name, the $cluster in Ceph's default paths")
    mon_host: str = option("", "monitor addresses, overriding ceph.conf's mon_host (then no ceph.conf is needed)")
    connect_timeout: int = option(0, "seconds to wait for the monitors; 0: Ceph's client_mount_timeout (300)")
    op_timeout: int = option(0, "seconds before an OSD or monitor request fails as retryable; 0: wait, as Ceph does")
    chunk_size: int = option(0, "bytes per chunk object; 0 or more than the cluster allows: the cluster's osd_max_object_size")
    inline_max: int = option(16384, "objects up to this many bytes are kept in the index (omap), without chunk objects")
    abandoned_after: int = option(86400, "seconds after which an unfinished put whose writer cannot be checked (another host or pid namespace) counts as abandoned and is cleaned")


@dataclasses.dataclass(frozen=True)
class RadosLimits:
    """The cluster's limits as read at connect time, and the sizes this backend uses under them."""

    max_object_size: int
    max_write_size: int
    chunk_size: int
    write_size: int
    inline_max: int


def parse_size(text: str) -> int:
    """A Ceph size as ``config get`` or ``conf_get`` prints it: 134217728, 90, 128M, 4Ki; 0 if it is none."""
    text = text.strip().strip('"')
    if not text:
        return 0
    units = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    number = text.rstrip("BbIi").rstrip("KkMmGgTt")
    unit = text[len(number):].rstrip("BbIi").lower()
    try:
        return int(number) * units[unit]
    except (ValueError, KeyError):
        return 0
