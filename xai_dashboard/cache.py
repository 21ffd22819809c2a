"""The on-disk cache of predictions and attribution maps: where it lives, who may read it, what it may hold.

Maps and probabilities reveal what users uploaded, so the folder is private
(0700, files 0600, checked to belong to this user). And a cache folder is
writable by more than this process (other workers, other tools, anyone who
gets a file in there), so nothing read from it may run code: diskcache
unpickles any row stored in pickle mode, which makes a planted row a remote
command execution on the next ``/api/predict``. :class:`SafeDisk` stores only
bytes, str, int and float (which diskcache keeps raw) and treats a pickled row
as a miss without ever unpickling it.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import diskcache
from diskcache.core import MODE_PICKLE

CACHE_ENV = "XAI_CACHE_DIR"
SIZE_LIMIT = 256 * 2**20
_RAW_TYPES = (bytes, str, int, float)  # what diskcache.Disk stores without pickle


class PickledRowError(OSError):
    """A row diskcache would have unpickled. An OSError, so ``Cache.get`` answers it as a miss."""


class SafeDisk(diskcache.Disk):
    """A diskcache ``Disk`` that never pickles or unpickles, and writes private files.

    ``store``/``put`` refuse (TypeError) values and keys that would be pickled; ``fetch``/``get``
    raise :class:`PickledRowError` on pickled rows, which ``Cache.get`` turns into the default
    (a miss) and the next ``set`` of that key overwrites.
    """

    def put(self, key):
        if type(key) not in _RAW_TYPES:  # exact types, as diskcache checks: a subclass would be pickled
            raise TypeError(f"cache keys must be bytes, str, int or float, not {type(key).__name__}")
        return super().put(key)

    def get(self, key, raw):
        if not raw:
            raise PickledRowError("refusing to unpickle a cache key")
        return super().get(key, raw)

    def store(self, value, read, key=diskcache.core.UNKNOWN):
        if not read and type(value) not in _RAW_TYPES:
            raise TypeError(f"cache values must be bytes, str, int or float, not {type(value).__name__}")
        size, mode, filename, db_value = super().store(value, read, key)
        if filename:  # diskcache writes value files with the process umask (usually 0644, folders 0755)
            full = Path(self._directory) / filename
            full.chmod(0o600)
            for folder in (full.parent, full.parent.parent):
                folder.chmod(0o700)
        return size, mode, filename, db_value

    def fetch(self, mode, filename, value, read):
        if mode == MODE_PICKLE:
            raise PickledRowError("refusing to unpickle a cache row (planted, or written without SafeDisk)")
        return super().fetch(mode, filename, value, read)


def cache_dir(directory: str | os.PathLike | None = None) -> Path:
    """``directory``, else ``$XAI_CACHE_DIR``, else ``~/.cache/xai-dashboard/explain``; created 0700."""
    path = Path(directory or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "xai-dashboard" / "explain")
    path = path.expanduser().resolve()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.getuid():
        raise PermissionError(f"{path}: cache folder belongs to another user")
    if st.st_mode & 0o077:
        path.chmod(0o700)  # maps reveal uploaded images: keep them private
    return path


def _private_database(folder: Path) -> None:
    """chmod ``cache.db`` and its -wal/-shm files to 0600. SQLite creates them with the umask, but gives
    a new -wal/-shm the database's own mode, so once this ran they stay private. (Creating the file
    0600 before SQLite does races with other workers opening the same new cache: disk I/O errors.)"""
    db = folder / diskcache.core.DBNAME
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        try:
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)
        except FileNotFoundError:  # no -wal/-shm while no connection is open
            pass


@functools.lru_cache(maxsize=8)
def _open_cache(path: str) -> diskcache.Cache:
    cache = diskcache.Cache(path, size_limit=SIZE_LIMIT, disk=SafeDisk)
    _private_database(Path(path))
    return cache


def explain_cache(directory: str | os.PathLike | None = None) -> diskcache.Cache:
    """The process's diskcache for maps in :func:`cache_dir` (one handle per folder; thread- and process-safe)."""
    return _open_cache(str(cache_dir(directory)))
