"""Training checkpoints that survive crashes: atomic, checksummed, the last k kept.

A checkpoint is a folder ``<checkpoints>/step-00001234/`` holding ``state.pt`` (model, optimizer, scheduler,
data position, every rank's RNG states; or, under FSDP, a ``sharded/`` folder written by
``torch.distributed.checkpoint``) and ``meta.json`` with the step and the SHA-256 and size of every file. It is
written under a temporary name, every file fsynced, ``meta.json`` last, then renamed into place: a crash or a
full disk leaves the previous checkpoints untouched, and a checkpoint whose files do not match their
checksums (truncated, bit-flipped) is detected and skipped with a warning.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
import warnings
from typing import Callable, Optional

import torch

from sslfast._atomic import file_sha256, fsync_directory

__all__ = ["CheckpointCorrupt", "save_checkpoint", "begin_checkpoint", "finish_checkpoint", "set_aside",
           "set_aside_after", "remove_stale_temporaries", "verify_checkpoint", "list_checkpoints",
           "latest_valid_checkpoint", "load_state", "STATE_FILE"]

STATE_FILE = "state.pt"
META_FILE = "meta.json"
_NAME = re.compile(r"^step-(\d{8,})$")


class CheckpointCorrupt(RuntimeError):
    """A checkpoint folder is incomplete or its files do not match their recorded checksums."""


def _files(directory: str) -> list[str]:
    """Every file under ``directory`` except meta.json, as sorted relative paths."""
    out = []
    for root, _, names in os.walk(directory):
        out.extend(os.path.relpath(os.path.join(root, n), directory) for n in names)
    return sorted(f for f in out if f != META_FILE)


def _fsync_file(path: str) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def begin_checkpoint(checkpoints_dir: str, step: int) -> str:
    """A fresh temporary folder for checkpoint ``step`` (the same name on every rank)."""
    os.makedirs(checkpoints_dir, exist_ok=True)
    tmp = os.path.join(checkpoints_dir, f".tmp-step-{step:08d}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    return tmp


def finish_checkpoint(checkpoints_dir: str, step: int, tmp: str, *, keep: int = 3,
                      extra_meta: Optional[dict] = None) -> str:
    """Checksum and fsync the files of ``tmp``, write ``meta.json`` last, rename to ``step-XXXXXXXX``,
    then delete all but the newest ``keep`` checkpoints. Returns the checkpoint's path."""
    final = os.path.join(checkpoints_dir, f"step-{step:08d}")
    files = {}
    for rel in _files(tmp):
        path = os.path.join(tmp, rel)
        _fsync_file(path)
        files[rel] = {"sha256": file_sha256(path), "bytes": os.path.getsize(path)}
    meta = {"step": step, "files": files, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(extra_meta or {})}
    with open(os.path.join(tmp, META_FILE), "w") as f:
        json.dump(meta, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    fsync_directory(tmp)
    replaced = None
    if os.path.exists(final):  # the same step saved again: the old copy stays until the new one is in place
        replaced = f"{final}.replaced-{os.getpid()}"
        os.rename(final, replaced)
    os.rename(tmp, final)
    fsync_directory(checkpoints_dir)
    if replaced:
        shutil.rmtree(replaced, ignore_errors=True)
    for old in list_checkpoints(checkpoints_dir)[keep:]:  # the newest steps stay (see set_aside_after)
        shutil.rmtree(old, ignore_errors=True)
    return final


def set_aside(path: str, reason: str) -> str:
    """Move a checkpoint out of the resumable set (renamed ``<name>.<reason>-<time>``), keeping its files."""
    target = f"{path}.{reason}-{time.strftime('%Y%m%d-%H%M%S')}"
    os.rename(path, target)
    return target


def set_aside_after(checkpoints_dir: str, step: int) -> list[str]:
    """Set aside every checkpoint newer than ``step``: a run resumed from ``step`` starts a new timeline, and
    the abandoned one must neither be resumed later nor crowd the new checkpoints out of ``keep``."""
    moved = []
    for path in list_checkpoints(checkpoints_dir):
        if int(os.path.basename(path).split("-")[1]) > step:
            moved.append(set_aside(path, "abandoned"))
    return moved


def remove_stale_temporaries(checkpoints_dir: str) -> None:
    """Delete ``.tmp-step-*`` folders a crashed save left behind."""
    if os.path.isdir(checkpoints_dir):
        for name in os.listdir(checkpoints_dir):
            if name.startswith(".tmp-step-"):
                shutil.rmtree(os.path.join(checkpoints_dir, name), ignore_errors=True)


def save_checkpoint(checkpoints_dir: str, step: int, write: Callable[[str], None], *, keep: int = 3,
                    extra_meta: Optional[dict] = None) -> str:
    """Write checkpoint ``step``: ``write(tmp_folder)`` fills a temporary folder, which is checksummed and
    renamed to ``step-XXXXXXXX``; all but the newest ``keep`` checkpoints are then deleted. Returns the path.
    If anything fails, the temporary folder is removed and the error raised: older checkpoints stay intact."""
    tmp = begin_checkpoint(checkpoints_dir, step)
    try:
        write(tmp)
        return finish_checkpoint(checkpoints_dir, step, tmp, keep=keep, extra_meta=extra_meta)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def verify_checkpoint(path: str) -> dict:
    """The checkpoint's meta after checking every file against its size and SHA-256; raises
    :class:`CheckpointCorrupt` naming the first problem."""
    try:
        with open(os.path.join(path, META_FILE)) as f:
            meta = json.load(f)
        recorded = meta["files"]
    except (OSError, ValueError, KeyError) as err:
        raise CheckpointCorrupt(f"{path}: unreadable {META_FILE} ({err})") from None
    if not recorded:
        raise CheckpointCorrupt(f"{path}: {META_FILE} lists no files")
    for rel, info in recorded.items():
        file = os.path.join(path, rel)
        if not os.path.isfile(file):
            raise CheckpointCorrupt(f"{file} is missing")
        if os.path.getsize(file) != info["bytes"]:
            raise CheckpointCorrupt(f"{file} has {os.path.getsize(file)} bytes, {info['bytes']} were written "
                                    f"(truncated?)")
        if file_sha256(file) != info["sha256"]:
            raise CheckpointCorrupt(f"{file} does not match its SHA-256 (corrupted)")
    return meta


def list_checkpoints(checkpoints_dir: str) -> list[str]:
    """Checkpoint folders, newest step first (temporary folders left by a crash are ignored)."""
    if not os.path.isdir(checkpoints_dir):
        return []
    found = [(int(m.group(1)), os.path.join(checkpoints_dir, n)) for n in os.listdir(checkpoints_dir)
             if (m := _NAME.match(n)) and os.path.isdir(os.path.join(checkpoints_dir, n))]
    return [path for _, path in sorted(found, reverse=True)]


def latest_valid_checkpoint(checkpoints_dir: str, *, set_aside_damaged: bool = False) -> Optional[str]:
    """The newest checkpoint whose files match their checksums; each newer bad one is skipped with a
    warning that names it (and, with ``set_aside_damaged``, renamed ``….damaged-<time>`` so that it is never
    tried again nor counted among the kept). None when there is no valid checkpoint."""
    for path in list_checkpoints(checkpoints_dir):
        try:
            verify_checkpoint(path)
            return path
        except CheckpointCorrupt as err:
            moved = set_aside(path, "damaged") if set_aside_damaged else None
            warnings.warn(f"skipping a damaged checkpoint: {err}" + (f" (moved to {moved})" if moved else ""),
                          stacklevel=2)
    return None


def load_state(path: str, map_location="cpu") -> dict:
    """The ``state.pt`` of a verified checkpoint (``weights_only`` loading: tensors and plain containers)."""
    return torch.load(os.path.join(path, STATE_FILE), map_location=map_location, weights_only=True)
