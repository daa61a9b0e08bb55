"""Moving files to and from S3 with CRC32C end to end: parallel multipart uploads whose FULL_OBJECT
CRC32C S3 stores (so a HEAD later tells what landed), and ranged downloads that resume a body cut
mid-stream from the last byte received (botocore retries failed requests, not broken bodies).

Generic over (local file, bucket, key); knows nothing of checkpoints.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from awscrt import checksums

from clusterops import checksum
from clusterops.checkpoint.safeio import open_regular
from clusterops.errors import ClusteropsError
from clusterops.fsutil import DirectWriter, aligned_buffer, start_writeback
from clusterops.s3 import raw_body

MiB = 1 << 20
# A body cut mid-read loses the piece being read (urllib3 raises instead of returning it): 1 MiB pieces
# keep the progress of a cut body, so a flaky connection still converges.
READ_PIECE = 1 * MiB
STREAM_ATTEMPTS = 8


class TransferError(ClusteropsError):
    """An object could not be moved or did not verify; the message names the object and the fault."""


@dataclass(frozen=True)
class RemoteObject:
    key: str
    size: int
    crc32c: int | None  # S3's stored whole-object CRC32C; None when it has none we can compare
    etag: str


class Bandwidth:
    """A token bucket shared by every transfer thread; rate in bytes/s, 0: unlimited."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def take(self, n: int) -> None:
        if self.rate <= 0:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + n / self.rate
        delay = start - now
        if delay > 0:
            time.sleep(delay)


def _error_code(e: Exception) -> str:
    resp = getattr(e, "response", None) or {}
    return str(resp.get("Error", {}).get("Code", "")) or str(
        resp.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
    )


def is_not_found(e: Exception) -> bool:
    return _error_code(e) in ("404", "NoSuchKey", "NotFound")


def is_precondition_failed(e: Exception) -> bool:
    return _error_code(e) in ("412", "PreconditionFailed", "ConditionalRequestConflict", "409")


def head(client: Any, bucket: str, key: str) -> RemoteObject | None:
    """What S3 holds at `key` (size, its own CRC32C record), or None when nothing is there."""
    from botocore.exceptions import ClientError

    try:
        r = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as e:
        if is_not_found(e):
            return None
        raise TransferError(f"s3://{bucket}/{key}: HEAD failed ({_error_code(e)})") from None
    crc = r.get("ChecksumCRC32C")
    # A COMPOSITE checksum ("...-N") is a CRC of part CRCs: not comparable with a file's CRC32C.
    usable = crc and "-" not in crc and r.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT"
    return RemoteObject(
        key, int(r["ContentLength"]), checksum.from_s3(crc) if usable else None, r.get("ETag", "")
    )


def matches(obj: RemoteObject | None, size: int, crc_hex: str) -> bool:
    return (
        obj is not None
        and obj.size == size
        and obj.crc32c is not None
        and checksum.to_hex(obj.crc32c) == crc_hex
    )


MAX_PARTS = 10_000  # S3's limit on the parts of one multipart upload


def part_size_for(size: int, preferred: int) -> int:
    """The preferred part size, grown (in whole MiB) where a file would otherwise need more parts than S3
    allows: 8 MiB parts reach 78 GiB, a 1 TiB file gets 105 MiB parts."""
    needed = -(-size // MAX_PARTS)
    return max(preferred, -(-needed // MiB) * MiB)


class Transfers:
    """One S3 client, one I/O thread pool and one bandwidth cap for every file moved in a run."""

    def __init__(
        self,
        client: Any,
        concurrency: int = 8,
        part_size: int = 8 * MiB,
        download_chunk: int = 64 * MiB,
        bandwidth_bps: float = 0.0,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        self.client = client
        self.part_size = max(5 * MiB, part_size)
        self.download_chunk = max(MiB, download_chunk)
        self.limit = Bandwidth(bandwidth_bps)
        self.on_bytes = on_bytes or (lambda n: None)
        self.io = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="s3-io")
        # Coordinators of multipart files wait on parts running in `io`: a separate pool, so they
        # can never take every io thread and deadlock.
        self.files = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="s3-file")
        self._local = threading.local()  # one read buffer per io thread, reused for every range

    def close(self) -> None:
        self.io.shutdown(wait=True, cancel_futures=True)
        self.files.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Transfers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ upload
    def upload(self, path: str | os.PathLike[str], bucket: str, key: str, size: int, crc_hex: str) -> Future:
        """Upload in the background; the future resolves once S3 answered, raising TransferError when
        the file no longer matches (size, CRC32C) what the caller expects."""
        if size <= self.part_size:
            return self.io.submit(self._put_small, path, bucket, key, size, crc_hex)
        return self.files.submit(self._put_multipart, path, bucket, key, size, crc_hex)

    def _read(self, path: str | os.PathLike[str], offset: int, length: int) -> bytes:
        fd = open_regular(path)
        try:
            data = os.pread(fd, length, offset)
        finally:
            os.close(fd)
        if len(data) != length:
            raise TransferError(f"{path}: shorter than its manifest says (changed since commit?)")
        return data

    def _put_small(
        self, path: str | os.PathLike[str], bucket: str, key: str, size: int, crc_hex: str
    ) -> None:
        data = self._read(path, 0, size)
        crc = checksums.crc32c(data)
        if checksum.to_hex(crc) != crc_hex:
            raise TransferError(f"{path}: CRC32C differs from its manifest (changed since commit?)")
        self.limit.take(size)
        self.client.put_object(
            Bucket=bucket, Key=key, Body=data, ChecksumAlgorithm="CRC32C", ChecksumCRC32C=checksum.to_s3(crc)
        )
        self.on_bytes(size)

    def _put_multipart(
        self, path: str | os.PathLike[str], bucket: str, key: str, size: int, crc_hex: str
    ) -> None:
        from botocore.exceptions import ClientError

        upload_id = self.client.create_multipart_upload(
            Bucket=bucket, Key=key, ChecksumAlgorithm="CRC32C", ChecksumType="FULL_OBJECT"
        )["UploadId"]
        try:
            psize = part_size_for(size, self.part_size)
            offsets = list(range(0, size, psize))
            futures = [
                self.io.submit(
                    self._put_part, path, bucket, key, upload_id, n + 1, off, min(psize, size - off)
                )
                for n, off in enumerate(offsets)
            ]
            parts = [f.result() for f in futures]
            whole = 0
            for part, off in zip(parts, offsets, strict=True):
                whole = checksums.combine_crc32c(whole, part["_crc"], min(psize, size - off))
            if checksum.to_hex(whole) != crc_hex:
                raise TransferError(f"{path}: CRC32C differs from its manifest (changed since commit?)")
            done = [{k: v for k, v in p.items() if k != "_crc"} for p in parts]
            try:
                self.client.complete_multipart_upload(
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": done},
                    ChecksumCRC32C=checksum.to_s3(whole),
                    ChecksumType="FULL_OBJECT",
                )
            except ClientError as e:
                # A retried Complete whose first try landed answers NoSuchUpload: the object is there.
                if _error_code(e) != "NoSuchUpload" or not matches(
                    head(self.client, bucket, key), size, crc_hex
                ):
                    raise
        except BaseException:
            # Best effort: a bucket lifecycle rule reaps what is left.
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            raise

    def _put_part(
        self,
        path: str | os.PathLike[str],
        bucket: str,
        key: str,
        upload_id: str,
        number: int,
        off: int,
        length: int,
    ) -> dict[str, Any]:
        data = self._read(path, off, length)
        crc = checksums.crc32c(data)
        self.limit.take(length)
        r = self.client.upload_part(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=data,
            ChecksumCRC32C=checksum.to_s3(crc),
        )
        self.on_bytes(length)
        return {"PartNumber": number, "ETag": r["ETag"], "ChecksumCRC32C": checksum.to_s3(crc), "_crc": crc}

    # ---------------------------------------------------------------- download
    def download(
        self, bucket: str, key: str, dest: str | os.PathLike[str], size: int, crc_hex: str
    ) -> Future:
        """Download into `dest` (created, or truncated) in parallel ranges; the future raises
        TransferError unless every byte arrived and the whole file's CRC32C is `crc_hex`. The file's
        writeback is started but not awaited: the caller makes it durable (a pull syncs its whole temp
        directory once, with fsutil.sync_files, before the rename)."""
        # A file of one range needs no coordinator: one io thread fetches it whole (as _put_small sends).
        pool = self.io if size <= self.download_chunk else self.files
        return pool.submit(self._get_file, bucket, key, dest, size, crc_hex)

    def _get_file(self, bucket: str, key: str, dest: str | os.PathLike[str], size: int, crc_hex: str) -> None:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        writer = DirectWriter(fd, dest)
        futures: list[Future] = []
        try:
            if size:
                os.ftruncate(fd, size)
            ranges = [
                (off, min(self.download_chunk, size - off)) for off in range(0, size, self.download_chunk)
            ]
            if len(ranges) == 1:  # on an io thread already (see download)
                whole = self._get_range(bucket, key, writer, 0, size)
            else:
                futures = [self.io.submit(self._get_range, bucket, key, writer, off, n) for off, n in ranges]
                whole = 0
                for (_, n), fut in zip(ranges, futures, strict=True):
                    whole = checksums.combine_crc32c(whole, fut.result(), n)
            if checksum.to_hex(whole) != crc_hex:
                raise TransferError(f"s3://{bucket}/{key}: downloaded bytes fail CRC32C against the manifest")
            start_writeback(fd)
        finally:
            for fut in futures:  # no range may still be writing when the descriptors close
                fut.cancel()
            wait(futures)
            writer.close()
            os.close(fd)

    def _get_range(self, bucket: str, key: str, out: DirectWriter, offset: int, length: int) -> int:
        """Fetch [offset, offset+length) into fd; a body cut mid-stream resumes where it stopped."""
        import http.client

        from botocore.exceptions import (
            ClientError,
            ConnectionClosedError,
            EndpointConnectionError,
            IncompleteReadError,
            ReadTimeoutError,
            ResponseStreamingError,
        )
        from urllib3.exceptions import HTTPError as Urllib3Error

        buf = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = aligned_buffer(READ_PIECE)
        view = memoryview(buf)
        crc, done, attempt, done_at_last_cut = 0, 0, 0, -1
        while done < length:
            start = offset + done
            try:
                resp = self.client.get_object(
                    Bucket=bucket, Key=key, Range=f"bytes={start}-{offset + length - 1}"
                )
                body = resp["Body"]
                raw = raw_body(body, resp)
                try:
                    while done < length:
                        want = min(READ_PIECE, length - done)
                        self.limit.take(want)
                        if raw is not None:  # straight from the socket into this thread's buffer
                            n = raw.readinto(view[:want])
                            chunk = view[:n]
                        else:
                            chunk = body.read(want)
                            n = len(chunk)
                        if not n:
                            raise IncompleteReadError(actual_bytes=done, expected_bytes=length)
                        crc = checksums.crc32c(chunk, crc)  # first, while the bytes are in cache
                        out.pwrite(chunk, offset + done)
                        done += n
                        self.on_bytes(n)
                finally:
                    body.close()
            except ClientError as e:
                if is_not_found(e):
                    raise TransferError(f"s3://{bucket}/{key}: missing in S3") from None
                if _error_code(e) in ("416", "InvalidRange"):
                    raise TransferError(
                        f"s3://{bucket}/{key}: shorter in S3 than the manifest says"
                    ) from None
                raise TransferError(f"s3://{bucket}/{key}: GET failed ({_error_code(e)})") from None
            except (
                http.client.HTTPException,  # IncompleteRead from a raw body cut mid-stream
                ResponseStreamingError,
                IncompleteReadError,
                ReadTimeoutError,
                ConnectionClosedError,
                EndpointConnectionError,
                Urllib3Error,
                ConnectionError,
            ) as e:
                # Count only cuts that made no progress: a long body may be cut many times.
                attempt = 1 if done > done_at_last_cut else attempt + 1
                done_at_last_cut = done
                if attempt >= STREAM_ATTEMPTS:
                    raise TransferError(
                        f"s3://{bucket}/{key}: stream cut {attempt} times at byte {offset + done} "
                        f"({type(e).__name__})"
                    ) from None
                time.sleep(min(5.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.0))
        return crc
