"""Connecting to the cluster: one connection and one shared I/O context per backend, opened on first
use; the cluster's limits read at connect time; the URL the backend reports."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import threading
from typing import Any, Iterator
from urllib.parse import quote, urlencode

from ..errors import BackendError, ConfigurationError, NotFound
from .errors import errno_of, load_rados, translate, translating
from .options import IO_SIZE, MIB, RadosLimits, RadosOptions, parse_size


def format_url(pool: str, namespace: str, options: RadosOptions) -> str:
    """``rados://POOL/NAMESPACE`` with the options that differ from their defaults."""
    defaults = RadosOptions()
    changed = {f.name: getattr(options, f.name) for f in dataclasses.fields(options) if getattr(options, f.name) != getattr(defaults, f.name)}
    return f"rados://{quote(pool, safe='')}/{quote(namespace, safe='')}" + (f"?{urlencode(changed)}" if changed else "")


class Connection:
    """Mixed into the backend: needs ``pool``, ``namespace``, ``options`` and ``url``."""

    pool: str
    namespace: str
    options: RadosOptions
    url: str

    def _init_connection(self) -> None:
        self._lock = threading.Lock()
        self._cluster: Any = None
        self._ioctx: Any = None
        self._limits: RadosLimits | None = None

    def _io(self) -> Any:
        """The shared ioctx (librados ioctxs are thread-safe); connects on first use."""
        if self._ioctx is None:
            with self._lock:
                if self._ioctx is None:
                    self._connect()
        return self._ioctx

    def _connect(self) -> None:
        rados = load_rados()
        opts = self.options
        conf: dict[str, str] = {}
        if opts.keyring:
            conf["keyring"] = opts.keyring
        if opts.mon_host:
            conf["mon_host"] = opts.mon_host
        if opts.op_timeout:
            conf["rados_osd_op_timeout"] = conf["rados_mon_op_timeout"] = str(opts.op_timeout)
        where = opts.conf or "Ceph's default places ($CEPH_CONF, /etc/ceph/ceph.conf, ~/.ceph/ceph.conf, ./ceph.conf)"
        try:
            cluster = rados.Rados(rados_id=opts.id, clustername=opts.cluster, conffile=rados.Rados.NO_CONF_FILE)
        except rados.Error as exc:
            raise ConfigurationError(f"{self.url}: {exc}") from exc
        try:
            try:
                cluster.conf_read_file(opts.conf or None)
            except rados.Error as exc:
                if not (opts.mon_host and not opts.conf):
                    raise ConfigurationError(f"{self.url}: cannot read a ceph.conf from {where}: {exc}") from exc
            for name, value in conf.items():  # the URL wins over ceph.conf
                cluster.conf_set(name, value)
            try:
                cluster.connect(timeout=opts.connect_timeout)
            except rados.Error as exc:
                if errno_of(exc) in (errno.ENOENT, errno.EINVAL):
                    raise ConfigurationError(
                        f"{self.url}: cannot connect as client.{opts.id} ({exc}); check mon_host in {where} and the keyring "
                        f"({opts.keyring or cluster.conf_get('keyring')})"
                    ) from exc
                raise translate(exc, "", what=f"connecting to the cluster as client.{opts.id}") from exc
            with translating("", what=f"opening pool {self.pool!r}"):
                try:
                    ioctx = cluster.open_ioctx(self.pool)
                except rados.ObjectNotFound as exc:
                    raise NotFound(f"pool {self.pool!r} does not exist", key="") from exc
                ioctx.set_namespace(self.namespace)
            self._limits = self._read_limits(cluster)
        except BaseException:
            cluster.shutdown()
            raise
        self._cluster, self._ioctx = cluster, ioctx

    def _read_limits(self, cluster: Any) -> RadosLimits:
        """The OSDs' limits from the monitors' config database, and from ceph.conf; the lower wins."""
        rados = load_rados()

        def lowest(name: str) -> int:
            values = []
            try:
                ret, out, _ = cluster.mon_command(json.dumps({"prefix": "config get", "who": "osd", "key": name}), b"")
                if ret == 0:
                    values.append(parse_size(out.decode()))
            except rados.Error:
                pass  # no 'mon allow r': fall back to ceph.conf and Ceph's defaults
            values.append(parse_size(cluster.conf_get(name) or ""))
            found = [v for v in values if v]
            if not found:
                raise BackendError(f"cannot read {name} from the cluster")
            return min(found)

        max_object = lowest("osd_max_object_size")
        max_write = lowest("osd_max_write_size") * MIB
        chunk = min(self.options.chunk_size or max_object, max_object)
        # Half the write limit leaves room for the xattrs and omap sent in the same request.
        write = max(min(chunk, IO_SIZE, max_write // 2), 1)
        return RadosLimits(max_object, max_write, chunk, write, min(self.options.inline_max, write))

    def limits(self) -> RadosLimits:
        """The cluster's limits and the chunk and request sizes in use (connects if needed)."""
        self._io()
        assert self._limits is not None
        return self._limits

    def close(self) -> None:
        with self._lock:
            ioctx, cluster = self._ioctx, self._cluster
            self._ioctx = self._cluster = None
        if ioctx is not None:
            ioctx.close()
        if cluster is not None:
            cluster.shutdown()

    @contextlib.contextmanager
    def _private_ioctx(self, key: str) -> Iterator[Any]:
        """An ioctx of one's own, for ``get_last_version`` (per ioctx, so racy on the shared one)."""
        self._io()
        with translating(key, what=f"opening pool {self.pool!r}"):
            ioctx = self._cluster.open_ioctx(self.pool)
        try:
            ioctx.set_namespace(self.namespace)
            yield ioctx
        finally:
            ioctx.close()
