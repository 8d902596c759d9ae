"""The training batches of a run: the step-based stream over a prepared DataLoader, and the images it skipped."""

from __future__ import annotations

from collections.abc import Iterator
import logging
from typing import Any

from accelerate import Accelerator
import torch

logger = logging.getLogger(__name__)


def batch_stream(loader, accelerator: Accelerator, start_micro_step: int) -> Iterator[dict[str, Any]]:
    """Endless batches of a prepared DataLoader, resuming at micro-batch `start_micro_step`.

    Epoch e uses the seedable sampler's order for seed + e, so a resumed run sees exactly the batches an
    uninterrupted run would (skipped batches are not loaded).
    """
    per_epoch = len(loader)
    if per_epoch == 0:
        raise ValueError("the training DataLoader is empty (fewer examples than one batch?)")
    epoch, position = divmod(start_micro_step, per_epoch)
    while True:
        loader.set_epoch(epoch)
        source = accelerator.skip_first_batches(loader, position) if position else loader
        yield from source
        epoch, position = epoch + 1, 0


class SkippedImages:
    """Images dropped at decode time (`skip_bad`): each named in a warning when met, counted over processes,
    stored in checkpoints and in `training_log.json` under "skipped_images" -> {stage: {count, files}}."""

    MAX_LISTED = 100

    def __init__(self, accelerator: Accelerator):
        self.accelerator = accelerator
        self.count = 0
        self.files: list[str] = []

    def take(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Remove the batch's `skipped_images` list (collator, skip_bad) and count it; returns the batch."""
        for path in batch.pop("skipped_images", None) or []:
            self.count += 1
            logger.warning("skipped an image that cannot be decoded: %s (%d so far on this process)", path, self.count)
            if len(self.files) < self.MAX_LISTED:
                self.files.append(str(path))
        return batch

    def state(self) -> dict[str, Any]:
        """Totals over all processes (a collective: call on every process)."""
        count = self.count
        if self.accelerator.num_processes > 1:
            count = int(self.accelerator.reduce(torch.tensor([count], device=self.accelerator.device), "sum").item())
        return {"count": count, "files": self.files}

    def restore(self, state: dict[str, Any] | None) -> None:
        if state:  # totals of all processes before the resume, kept on the main process's count
            self.count = int(state.get("count", 0)) if self.accelerator.is_main_process else 0
            self.files = list(state.get("files", []))


__all__ = ["SkippedImages", "batch_stream"]
