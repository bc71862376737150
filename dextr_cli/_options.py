"""Options shared by several commands, declared once."""
from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

ConfigOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--config", "-c", help="TOML config file (default: $DEXTR_CONFIG, else ./dextr.toml).",
        dir_okay=False, show_default=False,
    ),
]
ModelOpt = Annotated[
    Optional[str],
    typer.Option(
        "--model", "-m", help="Model: a checkpoint file, a dextr 0.1.2 / DEXTR-PyTorch file, or a "
        "pretrained model name (dextr download --list).", show_default=False,
    ),
]
DeviceOpt = Annotated[
    Optional[str],
    typer.Option(
        "--device", help="cpu, cuda, cuda:N, mps or auto (default: CUDA when available).",
        show_default=False,
    ),
]
BatchSizeOpt = Annotated[
    Optional[int], typer.Option("--batch-size", min=1, show_default=False,
                                help="Objects per network forward (default: 1 with the torch runtime on "
                                     "a CPU, 8 otherwise).")
]
PrecisionOpt = Annotated[
    Optional[str],
    typer.Option(
        "--precision", help="fp32 (exact), bf16 (about 2x faster on CPUs with "
        "AVX512-BF16/AMX, masks agree to within a pixel or so), fp16 (GPU only) or auto (bf16 "
        "where the hardware runs it natively, else fp32) (default: fp32).",
        show_default=False,
    ),
]
RuntimeOpt = Annotated[
    Optional[str],
    typer.Option(
        "--runtime", help="What runs the network: torch, onnxruntime (pip install 'dextr\\[onnx]') "
        "or openvino (pip install 'dextr\\[openvino]'); the last two run on the CPU (default: "
        "torch; for .onnx models openvino where installed, else onnxruntime).",
        show_default=False,
    ),
]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Random seed, for reproducible runs.")]

# Dataset options (eval, train, finetune); build the dataset with dextr_cli._datasets.open_dataset.
DatasetKindOpt = Annotated[
    Optional[str],
    typer.Option("--dataset", help="Dataset kind: pascal_voc, custom_label, custom_mask or coco.", show_default=False),
]
ImagePatOpt = Annotated[
    Optional[List[str]],
    typer.Option("--image-pat", help="Glob of the images (custom kinds); repeat to unite, @FILE reads a list.",
                 show_default=False),
]
TargetPatOpt = Annotated[
    Optional[List[str]],
    typer.Option("--target-pat", help="Glob of the label images (custom_label) or mask files (custom_mask); "
                 "paired with images by file stem.", show_default=False),
]
SplitOpt = Annotated[Optional[str], typer.Option("--split", help="pascal_voc split: train or val.", show_default=False)]
LabelIgnoreIndexOpt = Annotated[
    Optional[int],
    typer.Option("--label-ignore-index", help="Label value that is neither object nor background (void); "
                 "-1: none (default: 255).", show_default=False),
]
MinObjectAreaOpt = Annotated[
    Optional[int],
    typer.Option("--min-object-area", min=0, help="Skip objects with fewer pixels (default: 0).", show_default=False),
]

# COCO instances files (--dataset coco)
AnnotationsOpt = Annotated[
    Optional[Path],
    typer.Option("--annotations", dir_okay=False, help="coco: the COCO instances JSON file.", show_default=False),
]
ImagesDirOpt = Annotated[
    Optional[Path],
    typer.Option("--images", file_okay=False, help="coco: the folder its images' file_name entries are "
                 "relative to (default: the JSON file's folder).", show_default=False),
]
CategoriesOpt = Annotated[
    Optional[str],
    typer.Option("--categories", help="coco: only objects of these category names, comma-separated "
                 "(e.g. person,dog).", show_default=False),
]
PointsFromOpt = Annotated[
    Optional[str],
    typer.Option("--points-from", help="coco: annotations (the clicks stored as extreme_points where "
                 "present, else from the masks) or masks (default: annotations).", show_default=False),
]


def split_names(text) -> list:
    """``"person,dog"`` (or a list of such strings) -> ``["person", "dog"]``."""
    if not text:
        return []
    items = [text] if isinstance(text, str) else list(text)
    return [n.strip() for item in items for n in item.split(",") if n.strip()]


def pick(cli_value, config_value):
    """The CLI value when given, else the config's."""
    return config_value if cli_value is None else cli_value
WholeLabelsOpt = Annotated[
    Optional[bool],
    typer.Option("--whole-labels/--regions", help="One object per label instead of one per connected region "
                 "(default: regions).", show_default=False),
]
