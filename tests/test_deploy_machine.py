"""deploy.machine: the CPU record of a benchmark, and the allocator setting that keeps eager timings steady."""
import platform
import subprocess
import sys

import pytest

from mobilevision.deploy.machine import cpu_info, last_level_cache_bytes, machine_load

FAULTS = """
import resource, sys, torch
from mobilevision.deploy.machine import steady_allocator
if sys.argv[1] == "steady":
    assert steady_allocator()
torch.set_num_threads(1)
layers = [torch.nn.Sequential(torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU())
          for _ in range(4)]
model = torch.nn.Sequential(*layers).eval()
x = torch.randn(1, 16, 384, 384)  # 9 MiB activations, as at the first stages of a segmenter at 520 px
with torch.no_grad():
    for _ in range(3):
        model(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        model(x)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 10)
"""


def _faults_per_call(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


# steady_allocator sets glibc's mallopt thresholds; on another C library it changes nothing and returns False
@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="steady_allocator acts on glibc only")
def test_steady_allocator_stops_the_page_faults_of_each_large_allocation():
    fresh = _faults_per_call("default")  # 6000-15000 a call here: blocks mapped afresh (one per 2304 pages)
    steady = _faults_per_call("steady")  # 0, or a few hundred when the heap still grew once after the warmup
    assert fresh > 2000, fresh
    assert steady < fresh / 5, (steady, fresh)


def test_cpu_info_and_load_are_recorded():
    info = cpu_info()
    assert info["cpu"] and isinstance(info["cpu_flags"], str)
    assert machine_load()["cores"] >= 1


def test_last_level_cache_bytes_reads_sysfs_sizes(tmp_path):
    for i, size in enumerate(["48K", "32K", "1024K", "32768K", "garbage"]):
        (tmp_path / f"index{i}").mkdir()
        (tmp_path / f"index{i}" / "size").write_text(size + "\n")
    assert last_level_cache_bytes(cache_dir=tmp_path) == 32 * 2**20
    (tmp_path / "m" / "index3").mkdir(parents=True)
    (tmp_path / "m" / "index3" / "size").write_text("2M\n")
    assert last_level_cache_bytes(cache_dir=tmp_path / "m") == 2 * 2**20
    assert last_level_cache_bytes(default=123, cache_dir=tmp_path / "absent") == 123
