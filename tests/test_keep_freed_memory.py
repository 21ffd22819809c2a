"""trainer.runtime.keep_freed_memory: freed tensors' pages are reused instead of faulted in afresh.

Measured the way the problem was found: the minor page faults (``getrusage``) of allocating and freeing
a 64 MB buffer ten times (after a warm-up), in a fresh process with glibc's defaults and in one after the call.
"""
import subprocess
import sys

import pytest

PROBE = """
import resource, sys, torch
sys.path.insert(0, {root!r})
if {apply}:
    from trainer.runtime import keep_freed_memory
    assert keep_freed_memory()
for _ in range(16):  # glibc's heap settles after a few rounds (≤ 9 here); a training run does thousands
    torch.empty(16 * 2 ** 20).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.empty(16 * 2 ** 20).fill_(1.0)  # 64 MB (over glibc's largest mmap threshold, 32 MB), freed at once
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(apply: bool) -> int:
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", PROBE.format(root=root, apply=apply)],
                         capture_output=True, text=True, check=True, timeout=120)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_buffers_are_not_faulted_in_again():
    default, kept = _faults(False), _faults(True)
    pages = 10 * 64 * 2 ** 20 // 4096  # what ten fresh mappings of 64 MB cost in 4 KB pages
    assert default > 0.5 * pages, default  # the defect: every allocation is a new mmap
    assert kept < 0.05 * pages, kept
