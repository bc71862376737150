"""Options shared by several commands, declared once."""
from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

ConfigOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--config", "-c", help="TOML config file (default: $DEXTR_CONFIG, else ./dextr.toml).",
        dir_okay=False, show_default=False,
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
    Optional[int], typer.Option("--batch-size", min=1, help="Objects per network forward (default: 8).", show_default=False)
]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Random seed, for reproducible runs.")]


def pick(cli_value, config_value):
    """The CLI value when given, else the config's."""
    return config_value if cli_value is None else cli_value
