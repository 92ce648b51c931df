"""What a training step plugs into the loop: a :class:`Task` and a :class:`BatchSampler`.

The loop (:func:`samu_st.training.loop.train`) owns optimisation, precision, accumulation,
distribution, checkpoints and logging. A step (SSL pretraining, SAMU distillation, speech
translation, CTC, text denoising) only says how to turn a collated batch into a loss, which
parameters get which learning rate, and how to validate. It builds nothing itself: the model,
dataset, collate function and sampler are built by the caller.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from samu_st.errors import SamuError
from samu_st.training.bad_clips import Collated, DropBadClips, SkipBadAudio
from samu_st.training.config import OptimConfig
from samu_st.training.schedule import ParamGroup, default_param_groups

log = logging.getLogger(__name__)


@dataclass
class LossOutput:
    """The result of one micro-batch.

    ``loss`` is a scalar tensor with gradient, already averaged over the batch (the loop averages
    it again over accumulated micro-batches and processes). ``num_items`` counts what the loss
    averages over (utterances, tokens...), for logging. ``metrics`` are extra scalars to log
    (averaged over micro-batches, main process only).
    """

    loss: torch.Tensor  # () scalar
    num_items: int
    metrics: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class Task(Protocol):
    """A training objective.

    ``model`` passed to :meth:`loss` is the PREPARED model: it may be wrapped in
    ``DistributedDataParallel``, so call it (``model(...)``) once per micro-batch for the forward
    pass that needs gradients; reach inner modules with ``accelerate``'s ``unwrap_model`` only
    for work without gradients. The batch is already on the training device and the call runs
    under the loop's autocast context. Keep randomness on the global ``random``/``numpy``/
    ``torch`` generators (which checkpoints save), so that resuming is exact.
    """

    def loss(self, model: nn.Module, batch: Any) -> LossOutput:
        """Loss of one collated micro-batch."""
        ...

    def param_groups(self, model: nn.Module, cfg: OptimConfig) -> list[ParamGroup]:
        """Optimizer param groups (``{"params": [...], "lr": peak, "name": "encoder", ...}``).

        Called on the UNWRAPPED model. Frozen parameters may be listed (they are filtered out);
        every trainable parameter must be in exactly one group. A group without ``lr`` uses
        ``cfg.lr``; the tri-stage schedule scales each group's own peak LR.
        """
        ...

    def batch_seconds(self, batch: Any) -> float:
        """Seconds of audio in the (CPU) batch, before padding; 0 for text-only tasks."""
        ...

    def batch_padding(self, batch: Any) -> float:
        """Fraction of the (CPU) batch's padded tensor that is padding, in [0, 1]."""
        ...


class TaskBase:
    """Defaults for the optional parts of a :class:`Task`; subclass and implement ``loss``.

    Optional hooks the loop looks for (with ``getattr``) on any task:

    - ``on_step(step: int) -> None``: called before each update with the number of updates done
      so far (e.g. Gumbel temperature decay in wav2vec2 pretraining). Also called again with the
      same number when an update was skipped, and with the resumed number after ``--resume``,
      so derive state from ``step`` instead of counting calls.
    - ``validate(model, loader) -> dict[str, float]``: called on the UNWRAPPED model in eval mode
      under ``torch.no_grad()``, on the main process only, with RNG state saved and restored
      around it so validation never changes the training trajectory.
    """

    def loss(self, model: nn.Module, batch: Any) -> LossOutput:
        raise NotImplementedError

    def param_groups(self, model: nn.Module, cfg: OptimConfig) -> list[ParamGroup]:
        return default_param_groups(model, cfg)

    def batch_seconds(self, batch: Any) -> float:
        return 0.0

    def batch_padding(self, batch: Any) -> float:
        return 0.0


@runtime_checkable
class BatchSampler(Protocol):
    """Yields micro-batches of THIS process: lists of dataset keys (indices, or keys such as
    ``samu_st.data.sampler.SampleKey`` that the dataset understands).

    Contract (what exact resume and DDP rely on):

    - the loop calls ``set_epoch(e)``, then ``state_dict()``, then iterates epoch ``e``. After
      ``load_state_dict(that state)`` and ``set_epoch(e)``, iterating must give the same batches
      again, from the epoch's first one. The loop counts the batches it has consumed and skips
      that many on resume: with DataLoader workers the sampler is pulled ahead of training, so
      its own position is not what was trained on. (A sampler that tracks its position itself
      is fine: before iteration it reports position 0.)
    - under DDP each process builds its sampler with its own ``rank`` / ``world_size`` and gets
      a disjoint share of every epoch. Processes may yield different numbers of batches per
      epoch (each rolls over to its next epoch on its own, and an update always takes
      ``grad_accum`` micro-batches everywhere), but every epoch must have at least one batch.
    - ``state_dict()`` holds only plain Python values and tensors (it is loaded with
      ``torch.load(weights_only=True)``).
    """

    def __iter__(self) -> Iterator[list[Any]]: ...

    def set_epoch(self, epoch: int) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class SkipBatches:
    """The batches of ``sampler``'s current epoch after the first ``skip`` (a DataLoader input)."""

    def __init__(self, sampler: Iterable[list[Any]], skip: int) -> None:
        self.sampler = sampler
        self.skip = skip

    def __iter__(self) -> Iterator[list[Any]]:
        for i, batch in enumerate(self.sampler):
            if i >= self.skip:
                yield batch


class BatchStream:
    """Endless micro-batches: epoch after epoch of the sampler, with the position kept exactly."""

    def __init__(
        self,
        dataset: Dataset[Any],
        sampler: BatchSampler,
        collate_fn: Callable[[list[Any]], Any],
        num_workers: int,
        seed: int,
        rank: int,
        pin_memory: bool,
        max_bad_clips: int = 0,
    ) -> None:
        # unreadable clips are dropped from their batch and counted (samu_st.training.bad_clips)
        self.dataset, self.sampler = SkipBadAudio(dataset), sampler
        self.collate_fn = DropBadClips(collate_fn)
        self.max_bad_clips = max_bad_clips
        self.bad_clips: list[str] = []  # messages of the clips skipped so far (this process)
        self.num_workers, self.seed, self.rank = num_workers, seed, rank
        self.pin_memory = pin_memory
        self.epoch = 0
        self.position = 0  # batches of the current epoch already consumed
        self._it: Any = None
        self._epoch_state: dict[str, Any] | None = None  # sampler state at the epoch's start

    def _start_epoch(self) -> None:
        self.sampler.set_epoch(self.epoch)
        self._epoch_state = self.sampler.state_dict()

    def state_dict(self) -> dict[str, Any]:
        if self._epoch_state is None:
            self._start_epoch()
        return {"epoch": self.epoch, "position": self.position, "sampler": self._epoch_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._it = None
        self._epoch_state = None

    def _loader(self) -> DataLoader[Any]:
        self._start_epoch()
        # A private generator: worker seeds depend on (seed, epoch, rank) only, and building a
        # loader does not consume the global torch RNG (which a resume must find unchanged).
        generator = torch.Generator().manual_seed(
            (self.seed * 1_000_003 + self.epoch * 1_009 + self.rank) % 2**63
        )
        return DataLoader(
            self.dataset,
            batch_sampler=SkipBatches(self.sampler, self.position),
            collate_fn=self.collate_fn,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            generator=generator,
        )

    def next(self) -> Any:
        empty_epochs = 0
        while empty_epochs < 2:
            if self._it is None:
                self._it = iter(self._loader())
            try:
                out: Collated = next(self._it)
            except StopIteration:
                self._it = None
                empty_epochs += self.position == 0
                if self.position:
                    self.epoch, self.position = self.epoch + 1, 0
                continue
            except SamuError:
                raise
            except Exception as err:  # a worker's error, re-raised by torch as plain text
                raise _worker_error(err) from err
            self.position += 1
            self._count_bad(out.bad)
            if out.batch is not None:
                return out.batch
        raise SamuError(f"the batch sampler yielded no batch in epoch {self.epoch} (empty data?)")

    def _count_bad(self, messages: list[str]) -> None:
        for message in messages:
            self.bad_clips.append(message)
            log.warning("skipped an unreadable clip (%d so far): %s", len(self.bad_clips), message)
        if len(self.bad_clips) > self.max_bad_clips:
            raise SamuError(
                f"{len(self.bad_clips)} unreadable clips, over train.max_bad_clips="
                f"{self.max_bad_clips} (first: {self.bad_clips[0]}); fix the corpus or "
                "re-import it with --check-audio"
            )

    def close(self) -> None:
        self._it = None


_WORKER_ERROR = re.compile(r"^samu_st\.errors\.\w+: (.+)$", re.MULTILINE)


def _worker_error(err: Exception) -> Exception:
    """A data loader worker's SamuError comes back as text; turn it into a SamuError again."""
    found = _WORKER_ERROR.findall(str(err))
    return SamuError(found[-1]) if found else err
