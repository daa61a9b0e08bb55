"""The staging daemon: converge this node's local root to the datasets the config asks for.

Each round, for every `name=source` in [staging] datasets: get the manifest, and unless the dataset is
READY with that manifest, stage it into LOCAL_ROOT/datasets/NAME. Every step is idempotent and all
progress is on disk, so kill -9 at any point followed by a restart simply carries on.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusterops import config as config_mod
from clusterops.errors import ClusteropsError, ConfigError
from clusterops.fsutil import atomic_write_json
from clusterops.staging import engine, state
from clusterops.staging import manifest as mf

NAME_RE = mf.NAME_RE


class ManifestCache:
    """Parsed manifests, so that a daemon round does not parse an unchanged one again: a local file is
    known by (device, inode, size, mtime_ns, ctime_ns), anything else by the sha256 of its bytes."""

    def __init__(self, keep: int = 64):
        self.keep = keep
        self._entries: dict[tuple[Any, ...], mf.Manifest] = {}
        self.parses = 0

    def get(self, key: tuple[Any, ...], parse: Any) -> mf.Manifest:
        m = self._entries.get(key)
        if m is None:
            m = parse()
            self.parses += 1
            if len(self._entries) >= self.keep:
                self._entries.pop(next(iter(self._entries)))
            self._entries[key] = m
        # Callers set the name from the config; the cached record itself stays as parsed.
        return copy.copy(m)

    def load(self, path: str) -> mf.Manifest:
        try:
            s = os.stat(path)
        except OSError:
            return mf.load(path)  # says what is wrong with it, in one line
        key = ("file", path, s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns)
        return self.get(key, lambda: mf.load(path))

    def parse_bytes(self, data: bytes, where: str) -> mf.Manifest:
        return self.get(("bytes", where, hashlib.sha256(data).digest()), lambda: mf.parse_bytes(data, where))


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    source: str  # a manifest (.json file or s3 object), a directory, or an s3:// prefix


def parse_specs(cfg: config_mod.Config) -> list[DatasetSpec]:
    specs: list[DatasetSpec] = []
    seen: set[str] = set()
    for item in cfg.staging.datasets:
        name, sep, source = item.partition("=")
        name, source = name.strip(), source.strip()
        if not sep or not NAME_RE.match(name) or not source:
            raise ConfigError(
                f"staging.datasets: {item!r} is not NAME=SOURCE (NAME: letters, digits, . _ -;"
                " SOURCE: a manifest .json, a directory or an s3:// prefix)"
            )
        if name in seen:
            raise ConfigError(f"staging.datasets: dataset {name!r} listed twice")
        seen.add(name)
        if not source.startswith("s3://") and not os.path.isabs(source):
            if not cfg.staging.source_root:
                raise ConfigError(f"staging.datasets: {name}: relative {source!r} needs staging.source_root")
            source = os.path.join(cfg.staging.source_root, source)
        specs.append(DatasetSpec(name, source))
    return specs


def options_from(cfg: config_mod.Config) -> engine.Options:
    return engine.Options(
        workers=cfg.staging.max_workers,
        buffer_bytes=max(1, cfg.staging.buffer_mb) << 20,
        bandwidth_bytes_s=cfg.staging.bandwidth_mbps * 1e6,
        commit_bytes=max(1, cfg.staging.commit_mb) << 20,
    )


def resolve(
    spec: DatasetSpec,
    cfg: config_mod.Config,
    s3client: Any = None,
    dest: Path | None = None,
    cache: ManifestCache | None = None,
) -> tuple[mf.Manifest, str]:
    """The manifest for a dataset and the location of its bytes."""
    cache = cache or ManifestCache()
    src = spec.source
    if src.endswith(".json"):
        if src.startswith("s3://"):
            from clusterops.s3 import S3Url

            loc = S3Url.parse(src)
            client = s3client or _client(cfg)
            body = client.get_object(Bucket=loc.bucket, Key=loc.key)["Body"]
            try:
                data = body.read(mf.MAX_MANIFEST_BYTES + 1)
            finally:
                body.close()
            m = cache.parse_bytes(data, src)
        else:
            m = cache.load(src)
        if not m.source:
            raise mf.ManifestError(f"{src}: manifest names no source")
        m.name = m.name or spec.name
        return m, m.source
    # A bare directory or prefix: checksumming it every round would read the whole dataset each time.
    # A cheap listing (path, size, mtime or ETag) decides whether the manifest cached beside the
    # dataset still describes the source.
    cache_file = state.meta_dir(dest) / "source-manifest.json" if dest is not None else None
    listing = _listing(src, s3client or _client(cfg) if src.startswith("s3://") else None)
    if cache_file is not None and cache_file.is_file():
        cached = state.read_json_or_none(cache_file)
        if isinstance(cached, dict) and cached.get("listing") == listing:
            text = json.dumps(cached.get("manifest"))
            m = cache.get(("listing", str(cache_file), listing), lambda: mf.parse(text, str(cache_file)))
            return m, src
    if src.startswith("s3://"):
        m = mf.build_from_s3(src, s3client or _client(cfg), name=spec.name)
    else:
        m = mf.build_from_dir(src, name=spec.name, workers=cfg.staging.max_workers)
    if cache_file is not None:
        state.ensure_dir(cache_file.parent)
        atomic_write_json(cache_file, {"listing": listing, "manifest": json.loads(m.render())})
    return m, src


def _listing(src: str, client: Any) -> str:
    """A hash of what the source shows without reading it: path, size, and mtime (or S3 ETag)."""
    h = hashlib.sha256()
    if src.startswith("s3://"):
        from clusterops.s3 import S3Url

        loc = S3Url.parse(src)
        prefix = loc.key if not loc.key or loc.key.endswith("/") else loc.key + "/"
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                h.update(f"{obj['Key']}\0{obj['Size']}\0{obj.get('ETag', '')}\n".encode())
    else:
        for rel, full, size in mf.walk_dir(src):
            h.update(f"{rel}\0{size}\0{full.stat().st_mtime_ns}\n".encode())
    return h.hexdigest()


_clients: dict[int, Any] = {}


def _client(cfg: config_mod.Config) -> Any:
    from clusterops import s3

    key = id(cfg)
    if key not in _clients:
        _clients[key] = s3.client(cfg.s3)
    return _clients[key]


def node_state_file(cfg: config_mod.Config, name: str) -> Path:
    return config_mod.node_path(cfg.paths.state_dir) / "staging" / f"{name}.json"


def converge_once(
    cfg: config_mod.Config, log: Any = None, cache: ManifestCache | None = None
) -> list[dict[str, Any]]:
    """One pass over the configured datasets; returns each one's status. `cache` (kept across rounds
    by `run`) spares parsing a manifest that has not changed."""
    say = log or (lambda msg: None)
    root = state.datasets_root(config_mod.node_path(cfg.paths.local_root))
    results: list[dict[str, Any]] = []
    for spec in parse_specs(cfg):
        dest = state.dataset_dir(root, spec.name)
        try:
            manifest, location = resolve(spec, cfg, dest=dest, cache=cache)
            readiness = state.check_ready(dest)
            if readiness.ready and readiness.fingerprint == manifest.fingerprint:
                status = state.status(dest, deep=False)  # every file was just checked above
            else:
                say(f"{spec.name}: staging {len(manifest.files)} files from {location} into {dest}")

                def mirror(s: state.DatasetState, name: str = spec.name) -> None:
                    target = node_state_file(cfg, name)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    engine._write_json_fast(target, {**s.to_dict(), "ready": False})

                source = engine.source_for(location, cfg.s3)
                if isinstance(source, engine.S3Source):
                    source.client = _client(cfg)
                result = engine.Stager(
                    manifest, source, dest, options_from(cfg), on_state=mirror, root=root
                ).run()
                status = state.status(dest)
                say(
                    f"{spec.name}: {'READY' if result.ready else 'NOT READY'}, {result.files_copied} copied,"
                    f" {result.files_skipped} already verified, {result.gbps:.2f} GB/s"
                    + "".join(f"\n  {f['path']}: {f['error']}" for f in result.failed)
                )
        except engine.Busy as e:
            status = {**state.status(dest), "message": str(e)}
        except (ClusteropsError, OSError) as e:
            say(f"{spec.name}: {e}")
            status = {**state.status(dest), "name": spec.name, "message": str(e)}
        status["name"] = spec.name
        atomic_write_json(node_state_file(cfg, spec.name), status)
        results.append(status)
    if cfg.staging.evict_unlisted:
        evict_unlisted(cfg, root, {s.name for s in parse_specs(cfg)}, say)
    return results


def evict_unlisted(cfg: config_mod.Config, root: Path, wanted: set[str], say: Any) -> list[str]:
    """Converge the other way: a staged dataset the config no longer lists is evicted, unless some
    process on this node has a file of it open (a job still reading it keeps it until it ends)."""
    evicted = []
    for dest in state.list_datasets(root.parent):
        if dest.name in wanted or state.is_staged_dataset(dest) is not None:
            continue  # listed, or not ours (no bookkeeping of ours: something else put it there)
        users = _open_by(dest)
        if users:
            pids = ", ".join(map(str, users[:5]))
            say(f"{dest.name}: no longer configured, kept while in use by pid {pids}")
            continue
        try:
            freed = engine.evict(dest, root=root)
        except (ClusteropsError, OSError) as e:  # busy (being staged) or racing: next round retries
            say(f"{dest.name}: no longer configured, not evicted: {e}")
            continue
        node_state_file(cfg, dest.name).unlink(missing_ok=True)
        say(f"{dest.name}: no longer configured, evicted ({freed / 1e9:.2f} GB freed)")
        evicted.append(dest.name)
    return evicted


def _open_by(dest: Path) -> list[int]:
    """Pids with a file under `dest` open or as their working directory (those we may inspect)."""
    import psutil

    prefix = str(dest) + os.sep
    pids = []
    for proc in psutil.process_iter(["pid"]):
        try:
            cwd = proc.cwd()
            if (cwd + os.sep).startswith(prefix) or any(f.path.startswith(prefix) for f in proc.open_files()):
                pids.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return pids


def run(
    cfg: config_mod.Config, once: bool = False, stop: threading.Event | None = None, log: Any = None
) -> int:
    """Converge, then sleep poll_s and converge again, until `stop` is set. Returns the not-READY count
    of the last round (the exit status of `--once`)."""
    stop = stop or threading.Event()
    cache = ManifestCache()
    while True:
        results = converge_once(cfg, log, cache)
        not_ready = sum(1 for r in results if not r.get("ready"))
        if once or stop.wait(cfg.staging.poll_s if not not_ready else min(cfg.staging.poll_s, 10.0)):
            return not_ready
        time.sleep(0)
