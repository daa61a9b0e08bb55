"""The checkpoint layout in S3, and the rule that makes a remote checkpoint whole.

    s3://BUCKET/PREFIX/step-<N>/<path>                          data objects, uploaded first
    s3://BUCKET/PREFIX/step-<N>/_clusterops/parts/<node>.json   each pushing node's local manifest
    s3://BUCKET/PREFIX/step-<N>/clusterops-manifest.json        the manifest, once every file verified
    s3://BUCKET/PREFIX/latest                                   {"step": N, ...}, moved last, never back

Multi-node: in a multi-node DCP save each node's disk holds its ranks' `*.distcp` files and only one node
holds `.metadata`. So no node knows every file's size and CRC32C, but the `.metadata` holder knows every
file's name. Each node therefore uploads its files, HEAD-verifies them, then uploads its own manifest as
a *part*. Whoever uploads a part then tries to finish: it reads all parts, and when their union covers
the expected file list (the `.metadata` list; else `parts` nodes; else one complete part) it
HEAD-verifies every file of the union against S3's stored size and CRC32C and writes the manifest with
If-None-Match (one writer wins; the other finds identical bytes). Parts give sizes and checksums for
files no single node could know, so the manifest is as strong as a single-node one; the whole
`.metadata` list, not a file count, decides completeness.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from clusterops.checkpoint import transfer
from clusterops.checkpoint.layout import (
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    ManifestError,
    format_version,
    load_json,
    parse_step,
    step_dir_name,
)
from clusterops.checkpoint.transfer import RemoteObject, TransferError
from clusterops.s3 import S3Url

PARTS_DIR = "_clusterops/parts"
LATEST = "latest"
LATEST_FORMAT_NAME = "clusterops-latest"
LATEST_FORMAT_VERSION = 1  # version 0, read too: the same record without a "format" key
LATEST_MAX = 64 << 10  # bytes


@dataclass
class Latest:
    step: int
    etag: str = ""
    last_modified: float = 0.0  # unix time
    raw: dict[str, Any] = field(default_factory=dict)
    format: int = LATEST_FORMAT_VERSION


def parse_latest(data: bytes, where: str) -> Latest:
    """The typed `latest` pointer in `data` (current or previous format); a ManifestError naming `where`,
    the field and the value for anything else."""
    if len(data) > LATEST_MAX:
        raise ManifestError(f"{where}: {len(data)} bytes, more than a latest pointer may hold ({LATEST_MAX})")
    raw = load_json(data, where)
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: not a latest pointer (not a JSON object)")
    version = 0
    if "format" in raw:
        version = format_version(
            raw["format"], LATEST_FORMAT_NAME, (LATEST_FORMAT_VERSION - 1, LATEST_FORMAT_VERSION), where
        )
    step = raw.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step < 1 << 63:
        raise ManifestError(f"{where}: step = {step!r:.60}, not a whole number >= 0")
    if "dir" in raw and raw["dir"] != step_dir_name(step):
        raise ManifestError(f"{where}: dir = {raw['dir']!r:.60} does not name step {step}")
    for key in ("manifest", "updated_at", "host"):
        v = raw.get(key, "")
        if not isinstance(v, str) or len(v) > 4096 or any(ord(c) < 32 or ord(c) == 127 for c in v):
            raise ManifestError(f"{where}: {key} = {v!r:.60}, not plain text")
    return Latest(step, raw=raw, format=version)


@dataclass
class Completeness:
    complete: bool
    manifest: Manifest | None = None  # the union, when complete
    data: bytes = b""  # the manifest's exact bytes: a single complete part's own bytes, unchanged
    missing: list[str] = field(default_factory=list)
    reason: str = ""


class Remote:
    """One checkpoint prefix in one bucket, through one boto3 client."""

    def __init__(self, client: Any, url: str | S3Url) -> None:
        self.client = client
        self.url = url if isinstance(url, S3Url) else S3Url.parse(url)
        self.bucket = self.url.bucket
        self.prefix = self.url.key.strip("/")

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    # ------------------------------------------------------------------ keys
    def _join(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def step_prefix(self, step: int) -> str:
        return self._join(step_dir_name(step)) + "/"

    def data_key(self, step: int, rel: str) -> str:
        return self._join(step_dir_name(step), rel)

    def manifest_key(self, step: int) -> str:
        return self._join(step_dir_name(step), MANIFEST_NAME)

    def part_key(self, step: int, node: str) -> str:
        return self._join(step_dir_name(step), PARTS_DIR, f"{node}.json")

    def latest_key(self) -> str:
        return self._join(LATEST)

    # ----------------------------------------------------------------- reads
    def get_bytes(self, key: str) -> tuple[bytes, str, float] | None:
        """(body, ETag, Last-Modified as unix time) of a small object, or None when absent."""
        from botocore.exceptions import ClientError

        for attempt in range(5):
            try:
                r = self.client.get_object(Bucket=self.bucket, Key=key)
                return r["Body"].read(), r.get("ETag", ""), r["LastModified"].timestamp()
            except ClientError as e:
                if transfer.is_not_found(e):
                    return None
                raise TransferError(
                    f"s3://{self.bucket}/{key}: GET failed ({transfer._error_code(e)})"
                ) from None
            except Exception as e:  # a small body cut mid-stream: read it again
                if attempt == 4:
                    raise TransferError(
                        f"s3://{self.bucket}/{key}: GET failed ({type(e).__name__})"
                    ) from None
                time.sleep(0.1 * 2**attempt)
        return None

    def steps(self) -> list[int]:
        """Steps with anything under their prefix (complete or not), oldest first."""
        out = []
        paginator = self.client.get_paginator("list_objects_v2")
        base = self._join() + "/" if self.prefix else ""
        for page in paginator.paginate(Bucket=self.bucket, Prefix=base, Delimiter="/"):
            for cp in page.get("CommonPrefixes", []):
                name = cp["Prefix"][len(base) :].rstrip("/")
                step = parse_step(name)
                if step is not None and name.startswith("step-"):
                    out.append(step)
        return sorted(out)

    def manifest_bytes(self, step: int) -> bytes | None:
        got = self.get_bytes(self.manifest_key(step))
        return got[0] if got else None

    def manifest(self, step: int) -> Manifest | None:
        data = self.manifest_bytes(step)
        return Manifest.from_bytes(data, f"s3://{self.bucket}/{self.manifest_key(step)}") if data else None

    def latest(self) -> Latest | None:
        key = self.latest_key()
        got = self.get_bytes(key)
        if got is None:
            return None
        latest = parse_latest(got[0], f"s3://{self.bucket}/{key}")
        latest.etag, latest.last_modified = got[1], got[2]
        return latest

    def parts(self, step: int) -> list[tuple[Manifest, bytes]]:
        """Every node's uploaded part of `step`: (manifest, its exact bytes)."""
        prefix = self._join(step_dir_name(step), PARTS_DIR) + "/"
        out = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                got = self.get_bytes(obj["Key"])
                if got:
                    out.append((Manifest.from_bytes(got[0], f"s3://{self.bucket}/{obj['Key']}"), got[0]))
        return out

    def listed_sizes(self, step: int) -> dict[str, int]:
        """{relative path: size} of every data object under `step`, from one listing (no checksums)."""
        prefix = self.step_prefix(step)
        out = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                out[obj["Key"][len(prefix) :]] = int(obj["Size"])
        return out

    def head_files(
        self, step: int, files: list[FileEntry], workers: int = 16
    ) -> dict[str, RemoteObject | None]:
        def one(f: FileEntry) -> tuple[str, RemoteObject | None]:
            return f.path, transfer.head(self.client, self.bucket, self.data_key(step, f.path))

        if not files:
            return {}
        with ThreadPoolExecutor(max_workers=min(workers, len(files))) as pool:
            return dict(pool.map(one, files))

    def unverified(self, step: int, files: list[FileEntry]) -> list[str]:
        """Paths whose S3 object is missing, of another size, or without a matching CRC32C record."""
        # One listing first: what is absent or of the wrong size needs no HEAD to be called unverified.
        sizes = self.listed_sizes(step)
        candidates = [f for f in files if sizes.get(f.path) == f.size]
        heads = self.head_files(step, candidates)
        return [
            f.path
            for f in files
            if f.path not in heads or not transfer.matches(heads[f.path], f.size, f.crc32c)
        ]

    # ---------------------------------------------------------------- writes
    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Write `key` only if nothing is there; False when something already was."""
        from awscrt import checksums
        from botocore.exceptions import ClientError

        from clusterops import checksum

        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                IfNoneMatch="*",
                ChecksumAlgorithm="CRC32C",
                ChecksumCRC32C=checksum.to_s3(checksums.crc32c(data)),
                ContentType="application/json",
            )
            return True
        except ClientError as e:
            if transfer.is_precondition_failed(e):
                return False
            raise TransferError(f"s3://{self.bucket}/{key}: PUT failed ({transfer._error_code(e)})") from None

    def put_part(self, step: int, node: str, manifest: Manifest | bytes) -> None:
        data = manifest if isinstance(manifest, bytes) else manifest.to_bytes()
        self.client.put_object(Bucket=self.bucket, Key=self.part_key(step, node), Body=data)

    def completeness(self, step: int) -> Completeness:
        """Do the uploaded parts of `step` add up to a whole checkpoint? Never trusts a file count."""
        raw_parts = self.parts(step)
        parts = [p for p, _ in raw_parts]
        if not parts:
            return Completeness(False, reason="no node has uploaded its part yet")
        union: dict[str, FileEntry] = {}
        for p in parts:
            for f in p.files:
                seen = union.setdefault(f.path, f)
                if seen != f:
                    raise ManifestError(
                        f"step {step}: two nodes hold different '{f.path}' ({seen.size} B {seen.crc32c} "
                        f"vs {f.size} B {f.crc32c}); refusing to write a manifest"
                    )
        with_meta = [p for p in parts if p.expected_files is not None]
        want_parts = max((p.parts or 0 for p in parts), default=0)
        if with_meta:
            expected = set(with_meta[0].expected_files or [])
            missing = sorted(expected - set(union))
            if missing:
                return Completeness(
                    False, missing=missing, reason=f"{len(missing)} file(s) of .metadata not yet uploaded"
                )
        elif want_parts:
            if len(parts) < want_parts:
                return Completeness(False, reason=f"{len(parts)} of {want_parts} nodes' parts uploaded")
        elif not any(p.complete for p in parts):
            return Completeness(False, reason="only parts without .metadata uploaded so far")
        if len(parts) == 1 and parts[0].complete:
            return Completeness(True, parts[0], raw_parts[0][1])
        lead = with_meta[0] if with_meta else min(parts, key=lambda p: p.host)
        merged = Manifest(
            step=step,
            files=sorted(union.values(), key=lambda f: f.path),
            tokens_seen=max(p.tokens_seen for p in parts),
            dir_name=lead.dir_name,
            created_at=min(p.created_at for p in parts),
            host=",".join(sorted({p.host for p in parts})),
            expected_files=lead.expected_files,
            parts=len(parts),
            complete=True,
            extra=lead.extra,
        )
        data = merged.to_bytes()
        Manifest.from_bytes(data, f"step {step}: the union of its parts")  # the same checks as any manifest
        return Completeness(True, merged, data)

    def move_latest(self, step: int, host: str) -> bool:
        """Point `latest` at `step` unless it already points at a newer one; compare-and-swap on the ETag
        so two nodes never move it backwards. True when it now points at `step`."""
        from botocore.exceptions import ClientError

        key = self.latest_key()
        for _ in range(10):
            cur = self.latest()
            if cur is not None and cur.step >= step:
                return cur.step == step
            body = json.dumps(
                {
                    "format": f"{LATEST_FORMAT_NAME}/{LATEST_FORMAT_VERSION}",
                    "step": step,
                    "dir": step_dir_name(step),
                    "manifest": self.manifest_key(step),
                    "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "host": host,
                },
                sort_keys=True,
            ).encode()
            cond = {"IfMatch": cur.etag} if cur is not None else {"IfNoneMatch": "*"}
            try:
                self.client.put_object(
                    Bucket=self.bucket, Key=key, Body=body, ContentType="application/json", **cond
                )
                return True
            except ClientError as e:
                if not transfer.is_precondition_failed(e):
                    raise TransferError(
                        f"s3://{self.bucket}/{key}: PUT failed ({transfer._error_code(e)})"
                    ) from None
        raise TransferError(f"s3://{self.bucket}/{key}: could not move latest to {step} (contention)")

    def delete_step(self, step: int) -> int:
        """Delete a remote checkpoint: its manifest first (it stops being whole), then everything else."""
        self.client.delete_object(Bucket=self.bucket, Key=self.manifest_key(step))
        n = 0
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.step_prefix(step)):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
                n += len(keys)
        return n
