"""Incomplete multipart uploads: the S3 backend's optional ``Leftovers`` ability (``backends/base.py``).

A process killed in the middle of a multipart put leaves an upload that is
neither completed nor aborted; its parts cost storage until aborted.
"""

from __future__ import annotations

from typing import Iterator

from ..base import IncompleteUpload
from .errors import SDK_ERRORS, error_code, translate_error


class IncompleteUploads:
    """Mixed into the backend: needs ``_client``, ``bucket``, ``root``, ``_object_prefix``, ``_relative``, ``_pages``."""

    def iter_incomplete_uploads(self, prefix: str) -> Iterator[IncompleteUpload]:
        """Multipart uploads under ``prefix`` never completed nor aborted, with the bytes their parts hold."""
        full = self._object_prefix(prefix)
        for page in self._pages("list_multipart_uploads", full, Prefix=full):
            for upload in page.get("Uploads", ()):
                size = self._parts_size(upload["Key"], upload["UploadId"])
                if size is not None:
                    yield IncompleteUpload(self._relative(upload["Key"]), upload["UploadId"], upload["Initiated"], size)

    def _parts_size(self, object_key: str, upload_id: str) -> int | None:
        """Bytes the upload's parts hold; None when it ended meanwhile."""
        size = 0
        try:
            for page in self._client.get_paginator("list_parts").paginate(Bucket=self.bucket, Key=object_key, UploadId=upload_id):
                size += sum(int(part["Size"]) for part in page.get("Parts", ()))
        except SDK_ERRORS as exc:
            if error_code(exc) == "NoSuchUpload":
                return None
            raise translate_error(exc, self._relative(object_key)) from exc
        return size

    def abort_incomplete_upload(self, upload: IncompleteUpload) -> None:
        """Abort an upload ``iter_incomplete_uploads`` listed (its key as listed, even malformed)."""
        object_key = f"{self.root}/{upload.key}" if self.root else upload.key
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=object_key, UploadId=upload.upload_id)
        except SDK_ERRORS as exc:
            if error_code(exc) != "NoSuchUpload":
                raise translate_error(exc, upload.key) from exc
