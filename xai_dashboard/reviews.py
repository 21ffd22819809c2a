"""People's reviews of test labels, one JSON file per dataset, shared by every run on it.

A review says of one test image: the label is wrong (and which class it should be), it is
fine, or the reviewer is not sure. The file is named after the dataset fingerprint
(``reviews-<fingerprint>.json``) and lives outside the run directories, which are
immutable: in ``$XAI_REVIEWS_DIR``, else ``~/.cache/xai-dashboard/reviews``. Every run
evaluated on the same test images therefore sees the same reviews, across restarts.

Writes are read-modify-write under an exclusive ``flock`` on a lock file beside it, and the
new content replaces the old by rename (:func:`trainer.rundir.atomic_write`): two workers
saving at once both land, and a reader never sees half a file. A file that cannot be trusted
(not JSON, not a reviews file, another dataset's, a newer format) raises
:class:`ReviewsError` and is never written over; the page says why and keeps the original labels.
"""
from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from trainer.rundir import atomic_write

REVIEWS_ENV = "XAI_REVIEWS_DIR"
FORMAT = "xai-dashboard label reviews"
VERSION = 1  # the newest format this code reads and the one it writes
VERDICTS = {"wrong": "label is wrong", "fine": "label is fine", "unsure": "not sure"}


class ReviewsError(Exception):
    """The reviews file cannot be used; the message names the file and the reason."""


class Review(BaseModel):
    """One image's review; ``label`` (the corrected class) is set exactly when the verdict is "wrong"."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    verdict: Literal["wrong", "fine", "unsure"]
    label: int | None = None
    at: str  # ISO 8601 time of the review (UTC)

    @model_validator(mode="after")
    def _label_iff_wrong(self):
        if (self.label is not None) != (self.verdict == "wrong"):
            raise ValueError("a corrected label goes with the verdict 'wrong' and only with it")
        return self


class ReviewsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal[FORMAT]
    version: int
    dataset: str            # the dataset fingerprint (meta.json dataset.fingerprint)
    num_test: int
    class_names: list[str]
    reviews: dict[int, Review]  # test-set index -> review


def reviews_dir() -> Path:
    """``$XAI_REVIEWS_DIR``, else ``~/.cache/xai-dashboard/reviews`` (not created here)."""
    return Path(os.environ.get(REVIEWS_ENV) or Path.home() / ".cache" / "xai-dashboard" / "reviews").expanduser()


def _parse(path: Path, text: str, expected: dict) -> dict[int, Review]:
    """The reviews in ``text``, after checking it is a reviews file of this version for ``expected``."""
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise ReviewsError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ReviewsError(f"{path} is not a label-reviews file (no \"format\": \"{FORMAT}\")")
    version = raw.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ReviewsError(f"{path} has no valid format version ({version!r})")
    if version > VERSION:
        raise ReviewsError(f"{path} was written by a newer xai-dashboard (format {version}; this one reads up to "
                           f"{VERSION}): upgrade to use it")
    if raw.get("dataset") != expected["dataset"]:
        raise ReviewsError(f"{path} holds reviews of another dataset (fingerprint {raw.get('dataset')!r}, "
                           f"expected {expected['dataset']!r})")
    try:
        data = ReviewsFile.model_validate(raw)
    except ValidationError as e:
        raise ReviewsError(f"{path} is malformed: {e.errors()[0]['loc']}: {e.errors()[0]['msg']}") from None
    if data.num_test != expected["num_test"] or data.class_names != expected["class_names"]:
        raise ReviewsError(f"{path} was written for {data.num_test} test images of classes {data.class_names}, "
                           f"not {expected['num_test']} of {expected['class_names']}")
    k, n = len(data.class_names), data.num_test
    bad = [i for i, r in data.reviews.items() if not 0 <= i < n or (r.label is not None and not 0 <= r.label < k)]
    if bad:
        raise ReviewsError(f"{path} reviews image {bad[0]} with a label or index out of range")
    return data.reviews


@lru_cache(maxsize=32)
def _parsed(path: str, _stamp: tuple, expected_json: str) -> dict[int, Review]:
    """Memoised on the file's (inode, size, mtime): a page load re-reads only a changed file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ReviewsError(f"{path} is not UTF-8 text ({e.reason})") from None
    return _parse(Path(path), text, json.loads(expected_json))


@dataclass(frozen=True)
class ReviewStore:
    """The reviews of one dataset: ``folder/reviews-<fingerprint>.json``."""

    folder: Path
    fingerprint: str
    num_test: int
    class_names: tuple[str, ...]

    @classmethod
    def for_run(cls, run, folder: str | os.PathLike | None = None) -> "ReviewStore":
        dataset = run.meta["dataset"]
        return cls(Path(folder) if folder else reviews_dir(), dataset["fingerprint"], len(run.labels),
                   tuple(run.class_names))

    @property
    def path(self) -> Path:
        return self.folder / f"reviews-{self.fingerprint}.json"

    def _expected(self) -> dict:
        return {"dataset": self.fingerprint, "num_test": self.num_test, "class_names": list(self.class_names)}

    def load(self) -> dict[int, Review]:
        """Every review (empty when there is no file yet); :class:`ReviewsError` when the file is unusable."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {}
        try:
            return dict(_parsed(str(self.path), (st.st_ino, st.st_size, st.st_mtime_ns),
                                json.dumps(self._expected())))
        except OSError as e:
            raise ReviewsError(f"{self.path} cannot be read ({e.strerror or e})") from None

    @contextmanager
    def _locked(self):
        """An exclusive lock held by one writer (process or thread) at a time, on a file beside the reviews."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / f".reviews-{self.fingerprint}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def save(self, index: int, verdict: str, label: int | None = None) -> dict[int, Review]:
        """Record one review (replacing that image's earlier one) and return every review.

        Read, change and write happen under the lock, so a concurrent writer's reviews are kept;
        an unusable file raises :class:`ReviewsError` before anything is written.
        """
        if not 0 <= index < self.num_test:
            raise ValueError(f"test image {index} is outside 0..{self.num_test - 1}")
        review = Review(verdict=verdict, label=label if verdict == "wrong" else None,
                        at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        if review.label is not None and not 0 <= review.label < len(self.class_names):
            raise ValueError(f"class {review.label} is outside 0..{len(self.class_names) - 1}")
        with self._locked():
            reviews = self.load()
            reviews[index] = review
            body = ReviewsFile(format=FORMAT, version=VERSION, reviews=reviews, **self._expected())
            text = json.dumps(body.model_dump(mode="json"), indent=1)
            atomic_write(self.path, lambda f: f.write(text), mode="w")
        return reviews


def counts(reviews: dict[int, Review]) -> dict[str, int]:
    """How many reviews of each verdict, in :data:`VERDICTS` order."""
    out = dict.fromkeys(VERDICTS, 0)
    for r in reviews.values():
        out[r.verdict] += 1
    return out
