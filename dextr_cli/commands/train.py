"""``dextr train``: train a DEXTR model into a job directory."""
from __future__ import annotations

from typing import Optional

import typer
from typing_extensions import Annotated

from .._options import (
    ConfigOpt, DatasetKindOpt, DeviceOpt, ImagePatOpt, LabelIgnoreIndexOpt, MinObjectAreaOpt,
    SeedOpt, TargetPatOpt,
)
from ._training import (
    AugHflipOpt, AugRotRangeOpt, AugScaleRangeOpt, ExtremeRangeOpt, ItersPerEpochOpt, JobNameArg,
    JobsDirOpt, LearningRateOpt, LrPolyPowerOpt, LrSchedOpt, NoiseStdOpt, NumEpochsOpt,
    NumWorkersOpt, OptTypeOpt, OverwriteOpt, PretrainedLrFactorOpt, ResumeOpt, SgdWeightDecayOpt,
    TrainBatchSizeOpt, ValEveryOpt, ValImagePatOpt, ValTargetPatOpt, WholeLabelsOpt, run_job,
)


def train(
    job_name: JobNameArg,
    dataset: DatasetKindOpt = None,
    image_pat: ImagePatOpt = None,
    target_pat: TargetPatOpt = None,
    val_image_pat: ValImagePatOpt = None,
    val_target_pat: ValTargetPatOpt = None,
    label_ignore_index: LabelIgnoreIndexOpt = None,
    min_object_area: MinObjectAreaOpt = None,
    whole_labels: WholeLabelsOpt = None,
    arch: Annotated[Optional[str], typer.Option("--arch", help="Network architecture (default: resunet101).", show_default=False)] = None,
    target_size: Annotated[Optional[int], typer.Option("--target-size", min=16, help="Crop side in pixels (default: 512).", show_default=False)] = None,
    padding: Annotated[Optional[float], typer.Option("--padding", min=0.0, help="Margin around the points in crop pixels (default: 10).", show_default=False)] = None,
    blob_sigma: Annotated[Optional[float], typer.Option("--blob-sigma", min=0.0, help="Heatmap Gaussian sigma in crop pixels (default: 10).", show_default=False)] = None,
    pretrained: Annotated[Optional[bool], typer.Option("--pretrained/--no-pretrained", help="Start the encoder from torchvision's ImageNet weights (default: on).", show_default=False)] = None,
    backbone_weights: Annotated[Optional[str], typer.Option("--backbone-weights", help="Encoder weights from a local torchvision state-dict file (offline use).", show_default=False)] = None,
    learning_rate: LearningRateOpt = None,
    pretrained_lr_factor: PretrainedLrFactorOpt = None,
    lr_sched: LrSchedOpt = None,
    lr_poly_power: LrPolyPowerOpt = None,
    opt_type: OptTypeOpt = None,
    sgd_weight_decay: SgdWeightDecayOpt = None,
    extreme_range: ExtremeRangeOpt = None,
    noise_std: NoiseStdOpt = None,
    aug_hflip: AugHflipOpt = None,
    aug_rot_range: AugRotRangeOpt = None,
    aug_scale_range: AugScaleRangeOpt = None,
    batch_size: TrainBatchSizeOpt = None,
    num_epochs: NumEpochsOpt = None,
    iters_per_epoch: ItersPerEpochOpt = None,
    val_every_n_epochs: ValEveryOpt = None,
    device: DeviceOpt = None,
    num_workers: NumWorkersOpt = None,
    seed: SeedOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    jobs_dir: JobsDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Train a DEXTR model; outputs go to <jobs dir>/JOB_NAME (config.toml, log.txt, metrics.jsonl, checkpoints/).

    Every option can also come from the config's \\[train] table; the command line wins.
    Ctrl-C saves checkpoints/last.pt and prints the command that resumes the job.

    Examples:

      dextr train voc --dataset pascal_voc --arch resunet101

      dextr train peds --dataset custom_label --image-pat 'data/images/*.png' --target-pat 'data/labels/*.png' --val-image-pat 'val/images/*.png' --val-target-pat 'val/labels/*.png' --arch resunet18 --target-size 128 --no-pretrained --opt-type adam --learning-rate 1e-3

      dextr train peds --resume
    """
    if backbone_weights is not None and pretrained is False:
        raise typer.BadParameter("--backbone-weights and --no-pretrained exclude each other",
                                 param_hint="--backbone-weights")
    run_job("train", dict(locals()))
