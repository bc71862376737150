"""fileio: atomic writes that name the file and the cause on failure, and output checks."""
from __future__ import annotations

import os

import pytest

from dextr_lib.errors import DextrError, OutputError
from dextr_lib.utils import fileio
from dextr_lib.utils.fileio import atomic_write_text, check_output, shown_path


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_full_disk_names_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    # /dev/full answers every write with ENOSPC, as a full disk does: the writer's temporary
    # file is created for real (so its removal shows) but written through /dev/full.
    made = []
    real_open = os.open

    def open_on_full_disk(path, flags, mode=0o777, *args, **kwargs):
        fd = real_open(path, flags, mode, *args, **kwargs)
        if os.path.basename(os.fspath(path)).startswith(".report.json."):
            made.append(os.fspath(path))
            os.close(fd)
            return real_open("/dev/full", os.O_WRONLY)
        return fd

    monkeypatch.setattr(os, "open", open_on_full_disk)
    target = tmp_path / "report.json"
    target.write_text("old")
    with pytest.raises(OutputError) as e:
        atomic_write_text(target, "x" * 100000)
    msg = str(e.value)
    assert "report.json" in msg and "no space left on device" in msg and "removed" in msg
    assert isinstance(e.value, DextrError) and isinstance(e.value, OSError)
    assert len(made) == 1  # the writer went through a temporary file
    assert target.read_text() == "old" and not os.path.exists(made[0])


def test_unwritable_place_is_one_error_naming_the_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError, match="file/sub/out.txt: a part of the path is not a folder"):
        atomic_write_text(blocker / "sub" / "out.txt", "x")


def test_check_output_refuses_inputs_existing_files_and_folders(tmp_path):
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"x")
    with pytest.raises(OutputError, match="it is an input"):
        check_output(photo, inputs=[photo], force=True)  # never, even with --force
    with pytest.raises(OutputError, match="it is an input"):  # another spelling of the same file
        check_output(tmp_path / "." / "photo.png", inputs=[str(photo)])
    other = tmp_path / "mask.png"
    other.write_bytes(b"y")
    with pytest.raises(OutputError, match="already exists; pass --force"):
        check_output(other, inputs=[photo])
    check_output(other, inputs=[photo], force=True)
    check_output(tmp_path / "new" / "deeper" / "m.png", inputs=[photo])  # folders get created
    with pytest.raises(OutputError, match="it is a folder"):
        check_output(tmp_path, force=True)
    with pytest.raises(OutputError, match="not a folder"):
        check_output(photo / "m.png")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="not a regular file"):
        check_output(fifo, force=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_check_output_refuses_a_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="not writable"):
            check_output(ro / "m.png")
    finally:
        ro.chmod(0o755)


def test_shown_path_escapes_undecodable_bytes():
    name = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes on a UTF-8 system
    assert shown_path(name) == "caf\\xe9.png"
    shown_path(name).encode("utf-8")  # printable
    assert shown_path("plain/ok.png") == "plain/ok.png"


def test_describe_os_error():
    e = OSError(28, "No space left on device")
    assert fileio.describe_os_error(e, "a.pt") == "cannot write a.pt: no space left on device"


def test_check_clearable_refuses_a_folder_holding_an_input(tmp_path):
    job = tmp_path / "job"
    (job / "checkpoints").mkdir(parents=True)
    model = job / "checkpoints" / "best.pt"
    model.write_bytes(b"m")
    link = tmp_path / "start.pt"
    link.symlink_to(model)
    for src in (model, link, job / "." / "checkpoints" / "best.pt"):  # by its real path
        with pytest.raises(OutputError, match="refusing to clear .*job.*an input"):
            fileio.check_clearable(job, inputs=[src])
    outside = tmp_path / "other.pt"
    outside.write_bytes(b"o")
    fileio.check_clearable(job, inputs=[outside, None, "resunet18.sbd"])  # zoo names are not files
    sibling = tmp_path / "job2" / "m.pt"  # a name that starts like the folder is not in it
    sibling.parent.mkdir()
    sibling.write_bytes(b"s")
    fileio.check_clearable(job, inputs=[sibling])


def test_check_outputs_looks_at_each_file_a_bounded_number_of_times(tmp_path, monkeypatch):
    # A command checks every mask it writes against every photo it reads: comparing them pair by
    # pair made 4000 masks of 2000 photos take minutes. Each file must be looked at a few times.
    inputs = []
    for i in range(100):
        p = tmp_path / f"photo{i}.png"
        p.write_bytes(b"x")
        inputs.append(p)
    outputs = [(tmp_path / "masks" / f"m{i}.png", "--out-dir", "mask") for i in range(200)]
    calls = []
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda *a, **k: calls.append(a[0]) or real_stat(*a, **k))
    fileio.check_outputs(outputs, inputs=inputs)
    assert len(calls) <= 5 * (len(inputs) + len(outputs))
    with pytest.raises(OutputError, match="it is an input"):  # the rule still holds
        fileio.check_outputs([*outputs, (inputs[57], "--out-dir", "mask")], inputs=inputs, force=True)
