"""The ceilings: the same work done by the bare SDK, or by the disk and hashlib alone.

This is the one place outside box_adapter.py that imports box_sdk_gen, on purpose: a
ceiling is a measurement of the SDK itself (its own client, no cfbox-watch code in the
loop), so going through BoxRemote would measure the adapter instead of the bound."""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import os
import resource
import time
from pathlib import Path

import requests

from box_sdk_gen import BaseUrls, BoxClient, BoxJWTAuth, JWTConfig
from box_sdk_gen.managers.uploads import UploadFileAttributes, UploadFileAttributesParentField


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def sdk_client(config_path: Path, base_url: str, upload_url: str) -> BoxClient:
    """A signed-in SDK client (the sign-in happens here, outside any timing)."""
    auth = BoxJWTAuth(config=JWTConfig.from_config_file(config_file_path=str(config_path)))
    client = BoxClient(auth=auth).with_custom_base_urls(BaseUrls(base_url=base_url, upload_url=upload_url))
    client.users.get_user_me()
    return client


def sdk_upload_loop(client: BoxClient, folder_id: str, files: list[Path], workers: int) -> dict:
    """Upload every file with `workers` threads: the SDK's own upload_file, no hashing,
    no state, no checks. What cfbox-watch adds on top has to fit between this and its
    own figure."""

    def one(path: Path) -> None:
        with open(path, "rb") as f:
            client.uploads.upload_file(
                UploadFileAttributes(name=f"{path.parent.name}-{path.name}",
                                     parent=UploadFileAttributesParentField(id=folder_id)),
                f)

    cpu0, t0 = _cpu(), time.monotonic()
    with cf.ThreadPoolExecutor(max_workers=workers) as pool:
        for fut in [pool.submit(one, p) for p in files]:
            fut.result()
    return {"wall": time.monotonic() - t0, "cpu": _cpu() - cpu0, "files": len(files)}


def sdk_download_loop(client: BoxClient, file_ids: list[str], workers: int) -> dict:
    """Download every file with `workers` threads into memory and throw the bytes away."""

    def one(file_id: str) -> int:
        stream = client.downloads.download_file(file_id)
        n = 0
        while True:
            chunk = stream.read(1 << 20)
            if not chunk:
                return n
            n += len(chunk)

    cpu0, t0 = _cpu(), time.monotonic()
    with cf.ThreadPoolExecutor(max_workers=workers) as pool:
        total = sum(pool.map(one, file_ids))
    return {"wall": time.monotonic() - t0, "cpu": _cpu() - cpu0, "bytes": total}


def http_download_loop(client: BoxClient, base_url: str, file_ids: list[str], workers: int) -> dict:
    """The transport's ceiling for downloads: the SDK's own token, then plain `requests`
    GETs of /files/{id}/content (following the redirect to the download host) read in
    1 MiB pieces. The SDK's download_file stream reads 1 KB at a time, which makes it a
    floor rather than a ceiling for large files (see docs/benchmarks.md)."""
    token = client.auth.retrieve_token(network_session=client.network_session).access_token
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=max(4, workers))
    session.mount("http://", adapter)
    session.mount("https://", adapter)

    def one(file_id: str) -> int:
        n = 0
        with session.get(f"{base_url}/2.0/files/{file_id}/content", stream=True, timeout=600,
                         headers={"Authorization": f"Bearer {token}"}) as r:
            r.raise_for_status()
            for chunk in r.iter_content(1 << 20):
                n += len(chunk)
        return n

    cpu0, t0 = _cpu(), time.monotonic()
    with cf.ThreadPoolExecutor(max_workers=workers) as pool:
        total = sum(pool.map(one, file_ids))
    return {"wall": time.monotonic() - t0, "cpu": _cpu() - cpu0, "bytes": total}


def sdk_big_upload(client: BoxClient, folder_id: str, path: Path) -> dict:
    """The SDK's own chunked upload (sequential parts, SHA-1 per part and overall)."""
    size = path.stat().st_size
    cpu0, t0 = _cpu(), time.monotonic()
    with open(path, "rb") as f:
        client.chunked_uploads.upload_big_file(f, f"sdk-{path.name}", size, folder_id)
    return {"wall": time.monotonic() - t0, "cpu": _cpu() - cpu0, "bytes": size}


def write_sha1_fsync(path: Path, size: int, block: int = 1 << 20) -> dict:
    """The local ceiling of any download: writing that many bytes once, hashing them,
    and fsyncing the file (what a verified, crash-safe download has to do at least)."""
    data = bytes(block)
    h = hashlib.sha1()
    cpu0, t0 = _cpu(), time.monotonic()
    with open(path, "wb", buffering=0) as f:
        left = size
        while left > 0:
            n = min(block, left)
            f.write(data[:n])
            h.update(data[:n])
            left -= n
        os.fsync(f.fileno())
    wall = time.monotonic() - t0
    cpu = _cpu() - cpu0
    path.unlink()
    return {"wall": wall, "cpu": cpu, "bytes": size}


def read_and_sha1(path: Path, block: int = 1 << 20) -> dict:
    """The local ceiling of any upload: reading the file once and hashing it."""
    h = hashlib.sha1()
    buf = bytearray(block)
    view = memoryview(buf)
    n = 0
    cpu0, t0 = _cpu(), time.monotonic()
    with open(path, "rb", buffering=0) as f:
        while True:
            k = f.readinto(buf)
            if not k:
                break
            h.update(view[:k])
            n += k
    return {"wall": time.monotonic() - t0, "cpu": _cpu() - cpu0, "bytes": n, "sha1": h.hexdigest()}
