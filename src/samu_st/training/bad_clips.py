"""Unreadable clips met during training are skipped and counted, not fatal.

The fast import checks only audio headers (``--check-audio`` is off by default), so a
truncated mp3 or a float wav with NaN samples reaches training; stopping there loses hours of
GPU time and stops again at the same clip on resume. Instead the clip's item becomes
:class:`BadClip`, the collator drops it (a batch may come out smaller, or empty and be
skipped), and the stream logs the file and counts it, up to a limit after which the corpus is
too broken to train on silently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset

from samu_st.errors import AudioError


@dataclass(frozen=True)
class BadClip:
    """Stands in for an item whose audio could not be decoded."""

    message: str  # the AudioError's message (names the file)


@dataclass
class Collated:
    """A collated batch (None when every item was bad) and the messages of the bad items."""

    batch: Any
    bad: list[str]


class SkipBadAudio(Dataset[Any]):
    """``dataset`` with every :class:`~samu_st.errors.AudioError` turned into a BadClip."""

    def __init__(self, dataset: Dataset[Any]) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: Any) -> Any:
        try:
            return self.dataset[key]
        except AudioError as err:
            return BadClip(str(err))


class DropBadClips:
    """A collate function that drops BadClips before calling ``collate_fn`` (picklable, so
    DataLoader workers can use it)."""

    def __init__(self, collate_fn: Callable[[list[Any]], Any]) -> None:
        self.collate_fn = collate_fn

    def __call__(self, items: list[Any]) -> Collated:
        good = [item for item in items if not isinstance(item, BadClip)]
        bad = [item.message for item in items if isinstance(item, BadClip)]
        return Collated(self.collate_fn(good) if good else None, bad)
