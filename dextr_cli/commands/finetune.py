"""``dextr finetune``: continue training a DEXTR model on new data, in a job directory."""
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


def finetune(
    job_name: JobNameArg,
    from_model: Annotated[Optional[str], typer.Option("--from", help="Starting DEXTR model: a checkpoint file or a model-zoo name.", show_default=False)] = None,
    dataset: DatasetKindOpt = None,
    image_pat: ImagePatOpt = None,
    target_pat: TargetPatOpt = None,
    val_image_pat: ValImagePatOpt = None,
    val_target_pat: ValTargetPatOpt = None,
    label_ignore_index: LabelIgnoreIndexOpt = None,
    min_object_area: MinObjectAreaOpt = None,
    whole_labels: WholeLabelsOpt = None,
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
    """Fine-tune a trained DEXTR model on your data (keeps its architecture and pre-processing).

    Every layer learns at learning-rate x pretrained-lr-factor. Options as for `dextr train`;
    they can also come from the config's \\[train] table (the command line wins).

    Examples:

      dextr finetune mine --from dextr_resunet101.pascal_voc --dataset custom_mask --image-pat 'data/*.jpg' --target-pat 'data/*_mask*.png'

      dextr finetune voc-more --from jobs/voc/checkpoints/best.pt --dataset pascal_voc --num-epochs 10

      dextr finetune mine --resume
    """
    run_job("finetune", dict(locals()))
