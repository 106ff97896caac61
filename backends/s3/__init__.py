"""S3 backend (AWS S3, Ceph RGW, MinIO, ...) on boto3: ``s3://BUCKET/ROOTDIRECTORY?OPTIONS``.

Keys are stored as ``ROOTDIRECTORY/KEY`` (just ``KEY`` when the root directory
is empty), the layout of the registry's own ``storage.s3`` driver with
``rootdirectory: /ROOTDIRECTORY``. Options are declared in :class:`S3Options`;
credentials come only from boto3's chain (environment, shared files and
profiles -- pick one with ``?profile=`` --, container and instance roles) and
never appear in the URL, in ``url`` or in a log line.

Atomic puts follow from S3 itself: an object becomes visible whole, when its
PutObject or CompleteMultipartUpload succeeds, and not before.

* Objects up to ``multipart_threshold`` bytes are read into memory, then
  ``before_commit()`` runs, then one PutObject stores them: sent by the AWS
  CRT's S3 client when it can be used (``put_client``; see
  ``backends/s3/crt.py``), else by boto3.
* Larger objects go through a multipart upload driven here:
  CreateMultipartUpload, UploadPart calls on a thread pool, ``before_commit()``
  once every part is stored, then CompleteMultipartUpload. On any failure --
  the caller's stream, a part, ``before_commit`` -- the remaining parts are
  cancelled or awaited and the upload is aborted (AbortMultipartUpload), so no
  incomplete upload is left behind.

Why not boto3's transfer manager (s3transfer) for the multipart case: it
completes the upload itself, with no point between the last UploadPart and
CompleteMultipartUpload at which ``before_commit`` could run and veto the
commit. Hooking the client's ``before-call`` event for CompleteMultipartUpload
would work only by matching upload ids in a handler shared by every thread of
one client. Driving the four calls ourselves is short, and keeps the memory
bound explicit: the backend holds at most ``max_concurrency`` parts in flight
across all its puts (a semaphore taken before a part is read from the source,
released when its upload ends), each ``multipart_chunksize`` bytes, plus the
first ``multipart_threshold`` bytes a put buffers to choose its path. Parts
are uploaded by one pool of ``max_concurrency`` threads per backend.

Reads stream: ``open_read`` returns a thin wrapper around the response's
StreamingBody that translates errors raised while reading, fills each read
(as a file does) and raises TransientError when the answer ends before its
Content-Length (a truncated response), so a read cut short in transit is
never taken for the object's end.

Listings yield every key under the root as stored, malformed ones included
(``a//b``, ``a/../b``: written by other clients; see ``backends/base.py``),
except the zero-byte "folder" markers (``a/b/``) that S3 consoles create.

Incomplete multipart uploads (left by a process killed mid-put) are listed
and aborted through the optional ``Leftovers`` ability. Between buckets of one
service with the same credentials, objects are copied by the store itself
through the optional ``ServerCopy`` ability, each copy checked against the
bytes the caller reads before it becomes visible (``copies.py``).

Every SDK error goes through :func:`translate_error` (the CRT's through
``translate_crt_error``; both classify S3 error codes with
``backends/s3/codes.py``). Errors raised by the caller's stream or by
``before_commit`` are never translated.

Files, in the order every backend package keeps: ``options.py`` (options and
S3's limits), ``errors.py`` (SDK errors -> typed errors; ``codes.py`` the S3
error codes), ``connection.py`` (session, client, URL), ``backend.py`` (the
backend), ``streams.py`` (upload buffering, response bodies), ``leftovers.py``
(incomplete multipart uploads), ``copies.py`` (server-side copies), ``crt.py`` (single-request uploads through the
AWS CRT).
"""

from .backend import S3Backend
from .errors import translate_error
from .options import S3Options

__all__ = ["S3Backend", "S3Options", "translate_error"]
