"""Training DEXTR models: a library job (:class:`TrainingJob`) around a plain loop.

- :mod:`.job`: :class:`TrainingJob` (create / resume / run, the job folder's policy);
- :mod:`.loop`: :func:`training_loop` (a network's steps, epochs, validation, resumable state,
  deferred signals; no files, no printing) and :class:`Callbacks`, the one hook style of the
  loop and the job (the CLI renders them);
- :mod:`.folder`: :class:`JobDir`, the job folder's layout, lock, metrics and checkpoints;
- :mod:`.optim`: optimiser and learning-rate schedule; :mod:`.losses`: class-balanced BCE;
- :mod:`.samples`: augmented training samples and the (distributed) sample stream.

The settings schema is :class:`dextr_lib.config.TrainSettings` (the config's ``[train]`` table).
"""
from ..config import TrainSettings
from .folder import JobDir
from .job import TrainingJob, check_image_sizes, open_datasets, resolve_settings
from .loop import (
    Callbacks, EpochResult, TrainingInterrupted, TrainingState, ValidationResult, seed_everything, training_loop,
    validate,
)
from .losses import balanced_bce_with_logits
from .optim import lr_factor, make_optimizer

__all__ = [
    "Callbacks", "EpochResult", "JobDir", "TrainSettings", "TrainingInterrupted", "TrainingJob",
    "TrainingState", "ValidationResult", "balanced_bce_with_logits", "check_image_sizes",
    "lr_factor", "make_optimizer", "open_datasets", "resolve_settings", "seed_everything",
    "training_loop", "validate",
]
