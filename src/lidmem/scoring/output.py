"""The output folder of a scoring run: ``settings.json`` (claimed once, compared on every rerun),
the per-process lock, the per-shard Parquet part files (atomic writes, done checks) and
:func:`merge_shards`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import ArgumentError, parse_json_text
from .sources import Shard

__all__ = ["merge_shards", "read_settings", "SettingsMismatchError", "OutputLockedError"]


_FORMAT = 2  # 2: data fingerprint split into the layout (settings) and per-shard file contents
_META_KEY = b"lidmem"


class SettingsMismatchError(ValueError):
    """Raised when an output folder holds a run made with different settings."""


class OutputLockedError(ValueError):
    """Raised when another process is writing the same shards of the same output folder."""


def read_settings(out: str | Path) -> dict[str, Any]:
    """The ``settings.json`` document of an output folder (``{"format", "settings", "info"}``)."""
    path = Path(out) / "settings.json"
    if not path.is_file():
        raise ArgumentError(f"out={str(out)!r} holds no lidmem scoring run: no settings.json; expected the output folder of a "
                            "score run (settings.json and shards/part-*.parquet)", argument="out")
    return parse_json_text(path.read_bytes(), str(path))


def _settings_hash(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix[:-1]}: folder has {a!r}, this run has {b!r}"]


def _claim_settings(out: Path, doc: dict[str, Any]) -> bool:
    """Write ``settings.json`` if absent (atomically, race-free between workers), else check it.
    Returns True when this call created it."""
    final = out / "settings.json"
    created = False
    if not final.exists():
        tmp = out / f".settings.json.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(doc, indent=2, sort_keys=True))
        try:
            os.link(tmp, final)  # atomic create-if-absent: fails if another worker created it first
            created = True
        except FileExistsError:
            pass
        except OSError:  # file systems without hard links (some network mounts): near-atomic fallback
            if not final.exists():
                os.replace(tmp, final)
                created = True
        finally:
            tmp.unlink(missing_ok=True)
    try:
        existing = json.loads(final.read_text())
    except json.JSONDecodeError as exc:
        raise SettingsMismatchError(f"{final} is not valid JSON ({exc.msg}); delete it (and the shards) or choose a new --out folder") from None
    if existing.get("format") != doc["format"] or existing.get("settings") != doc["settings"]:
        diffs = _diff(existing.get("settings", {}), doc["settings"])
        raise SettingsMismatchError(
            f"{out} holds a scoring run with different settings ({'; '.join(diffs) or 'format ' + str(existing.get('format'))}); "
            "rerun with the folder's settings to resume it, or choose a new --out folder"
        )
    return created


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _clean_stale_temps(folder: Path, pattern: str) -> None:
    """Delete temporary files ``<name>.tmp-<pid>`` left by dead processes (call with the lock held;
    a temp of a live process on this machine is kept)."""
    for stale in folder.glob(pattern):
        pid_text = stale.name.rpartition(".tmp-")[2]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and _pid_alive(int(pid_text)):
            continue
        stale.unlink(missing_ok=True)


def _lock_output(out: Path, rank: int, world_size: int) -> Any:
    """Take this worker's lock on ``out`` (``out/.lock-rank<r>``, a :mod:`filelock` lock, released
    when the process ends, even on ``kill -9``). A second run writing the same shards is refused."""
    from filelock import FileLock, Timeout

    path = out / f".lock-rank{rank}"
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        who = "another lidmem score run" if world_size == 1 else f"another worker with rank {rank}"
        raise OutputLockedError(
            f"{who} is writing to {out} (lock {path} is held); wait for it to finish, or choose another --out folder"
        ) from None
    return lock


def _remove_if_empty(out: Path, lock: Any) -> None:
    """Remove an output folder this run created when nothing but its lock and an empty
    ``shards/`` is in it."""
    lock.release()
    for name in (f for f in out.glob(".lock-rank*")):
        name.unlink(missing_ok=True)
    shards = out / "shards"
    if shards.is_dir() and not any(shards.iterdir()):
        shards.rmdir()
    if not any(out.iterdir()):
        out.rmdir()


def _part_path(out: Path, shard: Shard) -> Path:
    return out / "shards" / f"part-{shard.index:06d}.parquet"


def _is_done(path: Path, shard: Shard, settings_hash: str, data_fingerprint: str | None = None) -> bool:
    import pyarrow.parquet as pq

    if not path.is_file():
        return False
    try:
        meta = pq.read_metadata(path)
        kv = json.loads((meta.metadata or {}).get(_META_KEY, b"{}"))
    except (OSError, ValueError) as exc:
        raise SettingsMismatchError(f"shard file {path} is corrupt ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); delete it to score its rows again") from None
    if kv.get("settings_hash") != settings_hash or meta.num_rows != shard.size:
        raise SettingsMismatchError(
            f"{path} was written by a different run ({meta.num_rows} rows, settings hash {kv.get('settings_hash')}); "
            "delete it or choose a new --out folder"
        )
    if data_fingerprint is not None and kv.get("data_fingerprint") != data_fingerprint:
        raise SettingsMismatchError(
            f"the data behind rows [{shard.start}, {shard.stop}) changed since {path} was written; "
            "delete that shard file to score those rows again"
        )
    return True


def _write_part(path: Path, columns: dict[str, np.ndarray | list[str]], dtypes: dict[str, str], meta: dict[str, Any],
                mask: np.ndarray | None = None) -> None:
    import pyarrow as pa

    arrays = {"row": pa.array(columns["row"], pa.int64()), "id": pa.array(columns["id"], pa.string())}
    for name, dtype in dtypes.items():
        values = np.asarray(columns[name], dtype=dtype)
        arrays[name] = pa.array(values, mask=mask) if mask is not None and mask.any() else pa.array(values)
    table = pa.table(arrays).replace_schema_metadata({_META_KEY: json.dumps(meta, sort_keys=True).encode()})
    _write_table_atomic(table, path)


def _write_table_atomic(table: Any, path: Path) -> None:
    """Write a Parquet ``table`` to ``path`` through a per-process temp file and an atomic rename."""
    import pyarrow.parquet as pq

    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def merge_shards(out: str | Path, *, output: str | Path | None = None) -> Path:
    """Union the shard files of a finished run into one Parquet table in row order.

    Streams shard by shard (memory bounded by one shard). Written atomically to
    ``output`` (default ``OUT/scores.parquet``) with the run's settings in its metadata.

    Raises
    ------
    ValueError
        If shards are missing (the message says how many and how to finish them) or a shard
        was written with other settings.
    """
    import pyarrow.parquet as pq

    out = Path(out)
    doc = read_settings(out)
    settings = doc["settings"]
    shash = _settings_hash(settings)
    n_shards = int(settings["n_shards"])
    paths = [out / "shards" / f"part-{i:06d}.parquet" for i in range(n_shards)]
    missing = [i for i, p in enumerate(paths) if not p.is_file()]
    if missing:
        raise ValueError(
            f"{len(missing)} of {n_shards} shards of {out} are not scored yet (first missing: {missing[:5]}); "
            "if other workers (RANK/WORLD_SIZE, a job array) are still running, wait for them and run "
            f"`lidmem score --out {out} --merge` again; otherwise rerun the scoring command (same options) to score them"
        )
    target = Path(output) if output is not None else out / "scores.parquet"
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    writer = None
    bad_rows: list[list[Any]] = []
    try:
        for p in paths:
            try:
                table = pq.read_table(p)
                kv = json.loads((table.schema.metadata or {}).get(_META_KEY, b"{}"))
            except (OSError, ValueError) as exc:
                first = " ".join(str(exc).split())[:200] or type(exc).__name__
                raise SettingsMismatchError(f"shard file {p} is corrupt ({first}); delete it and rerun the scoring command to score its rows again") from None
            bad_rows += kv.get("bad_rows") or []
            if kv.get("settings_hash") != shash:
                raise SettingsMismatchError(f"{p} was written with other settings than {out}/settings.json; delete it and rerun")
            table = table.replace_schema_metadata({_META_KEY: json.dumps({"settings_hash": shash, "settings": settings}, sort_keys=True).encode()})
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
        if writer is not None:
            writer.close()
            writer = None
        os.replace(tmp, target)
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
    _write_bad_rows(target.with_name("bad_rows.parquet"), bad_rows)
    return target


def _write_bad_rows(path: Path, bad_rows: list[list[Any]]) -> None:
    """``bad_rows.parquet`` (row, id, reason) of the skipped images; removed when there are none."""
    import pyarrow as pa

    if not bad_rows:
        path.unlink(missing_ok=True)
        return
    table = pa.table({"row": pa.array([int(b[0]) for b in bad_rows], pa.int64()), "id": pa.array([str(b[1]) for b in bad_rows]),
                      "reason": pa.array([str(b[2]) for b in bad_rows])})
    _write_table_atomic(table, path)
