"""lidmem._allocator keeps freed heap memory in the process: a batch-like loop of activation-sized
allocations page-faults far less with it than with glibc's default policy, and the environment
variable turns it off."""

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"), reason="glibc only")

_SCRIPT = """
import resource, torch
from lidmem._allocator import retain_freed_memory
on = retain_freed_memory()
def batch():
    xs = [torch.ones(1_500_000) for _ in range(30)]  # 30 activations of 6 MB, then freed
    del xs
batch()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    batch()
print(on, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
"""


def _run(env_value: str | None) -> tuple[bool, int]:
    env = dict(os.environ)
    env.pop("LIDMEM_KEEP_FREED_MEMORY", None)
    if env_value is not None:
        env["LIDMEM_KEEP_FREED_MEMORY"] = env_value
    out = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=env, check=True).stdout.split()
    return out[0] == "True", int(out[1])


def test_freed_memory_is_kept_and_the_switch_turns_it_off():
    on, faults_on = _run(None)
    off, faults_off = _run("0")
    assert on and not off
    # 5 batches of 180 MB: ~44,000 pages each time by default (measured ~88,000 faults)
    assert faults_off > 20_000
    assert faults_on < faults_off / 4
