"""S3 access in one place: endpoint, region, credentials, timeouts and retries from the config.

Imports boto3 lazily: the Slurm hook path must never pay for it.
"""

from __future__ import annotations

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


def client(s3cfg: Any) -> Any:
    """A boto3 S3 client built from a [s3] config section: bounded timeouts, standard retries."""
    import boto3
    from botocore.config import Config as BotoConfig

    kwargs: dict[str, Any] = {
        "region_name": s3cfg.region,
        "config": BotoConfig(
            connect_timeout=s3cfg.connect_timeout_s,
            read_timeout=s3cfg.read_timeout_s,
            retries={"max_attempts": s3cfg.max_attempts, "mode": "standard"},
            max_pool_connections=max(10, s3cfg.max_concurrency * 2),
            s3={"addressing_style": "path"} if s3cfg.endpoint_url else {},
        ),
    }
    if s3cfg.endpoint_url:
        kwargs["endpoint_url"] = s3cfg.endpoint_url
    if s3cfg.access_key_id and s3cfg.secret_access_key:
        kwargs["aws_access_key_id"] = s3cfg.access_key_id
        kwargs["aws_secret_access_key"] = s3cfg.secret_access_key
    return boto3.session.Session().client("s3", **kwargs)
