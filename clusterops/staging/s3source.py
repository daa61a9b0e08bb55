"""Reading S3 objects for staging: one GET per object, resumed with a Range from the last byte received
when the body is cut (boto3 retries the request, not a body that breaks mid-stream)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from awscrt import checksums

from clusterops.s3 import raw_body

READ_CHUNK = 4 << 20


class S3ReadError(OSError):
    pass


def _transient(exc: BaseException) -> bool:
    name = type(exc).__name__
    transient_names = (
        "ResponseStreamingError",
        "IncompleteReadError",
        "ReadTimeoutError",
        "ConnectTimeoutError",
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ProtocolError",
        "IncompleteRead",
        "RemoteDisconnected",
    )
    if name in transient_names or isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "") if hasattr(exc, "response") else ""
    return code in ("SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "503", "500")


def stream_object(
    client: Any,
    bucket: str,
    key: str,
    size: int,
    sink: Callable[[memoryview], None],
    buf: Any = None,
    attempts: int = 8,
) -> int:
    """Feed the object's bytes, in order, to `sink` as views of `buf` (a reused buffer; one of
    READ_CHUNK bytes when None); resume after a cut body. Returns bytes delivered."""
    if buf is None:
        buf = bytearray(READ_CHUNK)
    view = memoryview(buf)
    chunk = len(buf)
    offset = 0
    failures = 0
    while True:
        try:
            kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
            if offset:
                kwargs["Range"] = f"bytes={offset}-"
            resp = client.get_object(**kwargs)
            body = resp["Body"]
            try:
                raw = raw_body(body, resp)
                if raw is not None:
                    # Straight from the socket into one reused buffer: botocore/urllib3's read(amt)
                    # copies every byte two more times, which is most of a download's CPU.
                    while n := raw.readinto(buf):
                        sink(view[:n])
                        offset += n
                else:
                    while data := body.read(chunk):
                        sink(memoryview(data))
                        offset += len(data)
            finally:
                body.close()
            return offset
        except Exception as e:  # noqa: BLE001 - classified just below
            if not _transient(e):
                raise
            failures += 1
            if failures >= attempts:
                where = f"s3://{bucket}/{key}"
                raise S3ReadError(f"{where}: gave up after {failures} cut reads at byte {offset}: {e}") from e
            time.sleep(min(0.2 * 2**failures, 5.0))
        if size and offset >= size:
            return offset


def read_object_crc(
    client: Any, bucket: str, key: str, size: int, progress: Callable[[int], None] | None = None
) -> int:
    crc = 0

    def sink(view: memoryview) -> None:
        nonlocal crc
        crc = checksums.crc32c(view, crc)
        if progress:
            progress(len(view))

    stream_object(client, bucket, key, size, sink)
    return crc
