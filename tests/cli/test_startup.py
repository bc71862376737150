"""The CLI answers --help, --version and usage errors without importing torch (start-up in a
fraction of a second instead of the seconds torch takes)."""
from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("args, code", [
    (["--help"], 0),
    (["--version"], 0),
    (["predict", "--help"], 0),
    (["eval", "--help"], 0),
    (["train", "--help"], 0),
    (["export", "--help"], 0),
    (["serve", "--help"], 0),
    (["predict"], 2),                      # usage error: no model
    (["predict", "-m", "x.pt"], 2),        # usage error: no image/points
    (["eval", "--no-such-option"], 2),
])
def test_no_torch_import_for_help_and_usage_errors(args, code):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "dextr_cli", *args],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == code, proc.stdout + proc.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "dextr_cli.app" in imported  # the measurement saw the CLI load
    assert "torch" not in imported and "dextr_lib.model" not in imported


def test_library_names_still_import_lazily():
    code = ("import sys, dextr_lib; assert 'torch' not in sys.modules; "
            "m = dextr_lib.create_model; assert 'torch' in sys.modules; "
            "assert 'DextrModel' in dir(dextr_lib); print(dextr_lib.load_model.__module__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "dextr_lib.model"
