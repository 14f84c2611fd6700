#!/usr/bin/env python3
"""Reference TensorBoard event files for //megatron/core/training:tensorboard_writer_test.

  python3 megatron/core/training/testdata/make_tb_fixture.py
      Writes testdata/torch_summary_writer.tfevents with torch.utils.tensorboard.SummaryWriter (the
      reference writer). The C++ test parses it with its own TFRecord reader (CRCs checked) and expects
      exactly SCALARS below.

  python3 megatron/core/training/testdata/make_tb_fixture.py --verify FILE_OR_DIR
      Reads an event file that OUR writer produced (the test leaves one in
      bazel-testlogs/megatron/core/training/tensorboard_writer_test/test.outputs/outputs.zip) with
      TensorBoard's own EventAccumulator and checks it holds SCALARS. Not run in CI (needs tensorboard).

Keep SCALARS in sync with kScalars in tensorboard_writer_test.cc.
"""
import glob
import os
import shutil
import struct
import sys
import tempfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "torch_summary_writer.tfevents")
BASE_WALL_TIME = 1700000000.5

# (tag, step, value); wall time = BASE_WALL_TIME + step. Includes 0.0 (must still be written), a
# negative, a tiny and a large value, step 0 and a large step, and a tag with '/' and a space.
SCALARS = [
    ("loss", 0, 4.0),
    ("loss", 1, 3.5),
    ("loss", 2, 0.0),
    ("loss", 3, -1.25),
    ("lr", 0, 3e-4),
    ("lr", 1000000, 1e-6),
    ("train/grad norm", 7, 123456.75),
]


def make():
    from torch.utils.tensorboard import SummaryWriter

    tmp = tempfile.mkdtemp()
    try:
        w = SummaryWriter(log_dir=tmp)
        for tag, step, value in SCALARS:
            w.add_scalar(tag, value, global_step=step, walltime=BASE_WALL_TIME + step)
        w.close()
        (path,) = glob.glob(os.path.join(tmp, "events.out.tfevents.*"))
        shutil.copyfile(path, FIXTURE)
    finally:
        shutil.rmtree(tmp)
    print(f"wrote {FIXTURE} ({os.path.getsize(FIXTURE)} bytes)")


def verify(target):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tmp = None
    if target.endswith(".zip"):
        tmp = tempfile.mkdtemp()
        zipfile.ZipFile(target).extractall(tmp)
        target = tmp
    if os.path.isdir(target):
        files = glob.glob(os.path.join(target, "**", "events.out.tfevents.*"), recursive=True)
        assert len(files) == 1, f"expected one event file under {target}, found {files}"
        target = files[0]
    acc = EventAccumulator(target)
    acc.Reload()
    tags = sorted(acc.Tags()["scalars"])
    assert tags == sorted({t for t, _, _ in SCALARS}), tags
    for tag in tags:
        want = [(s, v) for t, s, v in SCALARS if t == tag]
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        # Values are float32 on disk.
        want32 = [(s, struct.unpack("<f", struct.pack("<f", v))[0]) for s, v in want]
        assert got == want32, (tag, got, want32)
        walls = [e.wall_time for e in acc.Scalars(tag)]
        assert walls == [BASE_WALL_TIME + s for s, _ in want], (tag, walls)
        print(f"  {tag!r}: {got}")
    print(f"EventAccumulator read {target}: OK ({len(SCALARS)} scalars, file_version "
          f"{acc.file_version!r})")
    if tmp:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--verify":
        verify(sys.argv[2])
    elif len(sys.argv) == 1:
        make()
    else:
        sys.exit(__doc__)
