"""S3 access in one place: endpoint, region, credentials, timeouts and retries from the config.

Imports boto3 lazily: the Slurm hook path must never pay for it.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any

from clusterops.errors import UsageError


@dataclass(frozen=True)
class S3Url:
    bucket: str
    key: str

    @classmethod
    def parse(cls, url: str) -> S3Url:
        if not url.startswith("s3://"):
            raise UsageError(f"{url!r}: not an s3:// URL")
        bucket, _, key = url[5:].partition("/")
        if not bucket:
            raise UsageError(f"{url!r}: no bucket name")
        return cls(bucket, key)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def endpoint_url(s3cfg: Any) -> str:
    """The endpoint in effect: the config's, else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, else AWS's ("")."""
    return (
        s3cfg.endpoint_url
        or os.environ.get("AWS_ENDPOINT_URL_S3", "").strip()
        or os.environ.get("AWS_ENDPOINT_URL", "").strip()
    )


def client(s3cfg: Any) -> Any:
    """An S3 client built from a [s3] config section: bounded timeouts, standard retries (503
    SlowDown, resets), path-style addressing on a custom endpoint.

    botocore's own client, the one boto3 hands out, without importing boto3: boto3 adds s3transfer (and
    multiprocessing) to every start, which we never use (clusterops.checkpoint.transfer moves the bytes)."""
    import botocore.session
    from botocore.config import Config as BotoConfig

    endpoint = endpoint_url(s3cfg)
    s3opts: dict[str, Any] = {"addressing_style": "path"} if endpoint else {}
    # Integrity comes from the CRC32C each upload carries (and S3 checks), not from SigV4 hashing the
    # body: over plain http botocore would otherwise SHA256 every byte it sends.
    s3opts["payload_signing_enabled"] = False
    kwargs: dict[str, Any] = {
        "region_name": s3cfg.region,
        "config": BotoConfig(
            connect_timeout=s3cfg.connect_timeout_s,
            read_timeout=s3cfg.read_timeout_s,
            retries={"max_attempts": s3cfg.max_attempts, "mode": "standard"},
            max_pool_connections=max(10, 2 * max(s3cfg.max_concurrency, s3cfg.upload_concurrency)),
            s3=s3opts,
            # Callers check CRC32C themselves (ranged reads carry no whole-object checksum anyway).
            response_checksum_validation="when_required",
            # Every request is built by our code from typed values: botocore's walk of the input shape
            # is CPU spent per request for nothing.
            parameter_validation=False,
        ),
    }
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    if s3cfg.access_key_id and s3cfg.secret_access_key:
        kwargs["aws_access_key_id"] = s3cfg.access_key_id
        kwargs["aws_secret_access_key"] = s3cfg.secret_access_key
    session = botocore.session.get_session()  # a new session: the parser default below stays ours
    session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=parse_timestamp)
    # Before loading a model, botocore confirms the service exists by listing every service's data
    # directory (~900 listdir and ~2,700 stat calls, ~40 ms of each command's start). This session only
    # ever builds an S3 client; a missing model still fails, in the version lookup that follows.
    session.get_component("data_loader").list_available_services = lambda type_name: ["s3"]
    s3 = session.create_client("s3", **kwargs)
    # The service model and handlers just built live as long as the process. Frozen, the cyclic garbage
    # collector stops walking them at every full collection (perf, a 2 GiB staging run: the collector's
    # share of cycles 6.8 % before, 3.2 % after, most of that now in the imports before this point).
    gc.freeze()
    return s3


def parse_timestamp(value: Any) -> Any:
    """S3's timestamps as botocore returns them (an aware datetime in the zone the text gives), without
    dateutil's general parser, which was ~10 % of a GET's client CPU (every GET carries Last-Modified).
    S3 sends RFC 7231 dates in headers and ISO 8601 in XML bodies; anything else goes to botocore's."""
    import datetime

    if isinstance(value, str):
        try:
            if value.endswith(" GMT"):  # Sat, 28 Nov 2026 12:00:00 GMT
                stamp = datetime.datetime.strptime(value, "%a, %d %b %Y %H:%M:%S GMT")
                return stamp.replace(tzinfo=datetime.UTC)
            stamp = datetime.datetime.fromisoformat(value)  # 2026-11-28T12:00:00.000Z
            if stamp.tzinfo is not None:
                return stamp
        except ValueError:
            pass
    from botocore.utils import parse_timestamp as general

    return general(value)


def raw_body(body: Any, resp: dict[str, Any]) -> Any:
    """The http.client response under botocore's StreamingBody, when reading it directly is safe (no
    content encoding, a known length: http.client then raises IncompleteRead on a cut body); else None.

    Reading it with `readinto` into one reused buffer skips the two copies botocore/urllib3's read(amt)
    makes of every byte, which are most of a download's client CPU."""
    import http.client

    fp = getattr(getattr(body, "_raw_stream", None), "_fp", None)
    if not isinstance(fp, http.client.HTTPResponse) or fp.length is None:
        return None
    if resp.get("ContentEncoding") or fp.getheader("Content-Encoding"):
        return None
    return fp
