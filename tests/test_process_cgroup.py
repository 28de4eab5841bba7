"""cgroup limits from fixture trees (v2, v1, hybrid, nested, unlimited) and from the real system."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psutil
import pytest

from otel_reliability.instrumentation import cgroup
from otel_reliability.instrumentation.process import ProcessSampler

V2_MOUNTINFO = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
V1_MOUNTINFO = (
    "31 23 0:28 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n"
    "32 31 0:29 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup rw,cpu,cpuacct\n"
    "35 31 0:32 /docker/abc /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory\n"
)
V1_UNLIMITED = "9223372036854771712"


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def v2_tree(root: Path, memory_max: str, cpu_max: str, parent_memory_max: str = "max") -> Path:
    return write(
        root,
        {
            "proc/self/mountinfo": V2_MOUNTINFO,
            "proc/self/cgroup": "0::/kubepods/pod1/app\n",
            "sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory pids\n",
            "sys/fs/cgroup/kubepods/pod1/memory.max": parent_memory_max + "\n",
            "sys/fs/cgroup/kubepods/pod1/cpu.max": "max 100000\n",
            "sys/fs/cgroup/kubepods/pod1/app/cgroup.controllers": "cpu memory\n",
            "sys/fs/cgroup/kubepods/pod1/app/memory.max": memory_max + "\n",
            "sys/fs/cgroup/kubepods/pod1/app/cpu.max": cpu_max + "\n",
        },
    )


def test_v2_limits(tmp_path: Path) -> None:
    group = cgroup.find(v2_tree(tmp_path, "536870912", "150000 100000"))
    assert cgroup.memory_limit(group) == 512 * 1024 * 1024
    assert cgroup.cpu_limit(group) == 1.5


def test_v2_max_means_unlimited(tmp_path: Path) -> None:
    group = cgroup.find(v2_tree(tmp_path, "max", "max 100000"))
    assert cgroup.memory_limit(group) is None
    assert cgroup.cpu_limit(group) is None


def test_v2_a_parent_limit_caps_the_child(tmp_path: Path) -> None:
    group = cgroup.find(v2_tree(tmp_path, "max", "max 100000", parent_memory_max="268435456"))
    assert cgroup.memory_limit(group) == 256 * 1024 * 1024


def v1_tree(root: Path, limit: str, quota: str, period: str = "100000") -> Path:
    # A container without a cgroup namespace: /proc/self/cgroup shows the host path, the mount's root is
    # that same path, so the files are directly under the mount point.
    return write(
        root,
        {
            "proc/self/mountinfo": V1_MOUNTINFO,
            "proc/self/cgroup": "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n",
            "sys/fs/cgroup/memory/memory.limit_in_bytes": limit + "\n",
            "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": quota + "\n",
            "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": period + "\n",
        },
    )


def test_v1_limits(tmp_path: Path) -> None:
    group = cgroup.find(v1_tree(tmp_path, "1073741824", "50000"))
    assert not group.memory_v2 and not group.cpu_v2
    assert cgroup.memory_limit(group) == 1024**3
    assert cgroup.cpu_limit(group) == 0.5


def test_v1_unlimited(tmp_path: Path) -> None:
    group = cgroup.find(v1_tree(tmp_path, V1_UNLIMITED, "-1"))
    assert cgroup.memory_limit(group) is None
    assert cgroup.cpu_limit(group) is None


def test_hybrid_host_uses_v1_when_the_unified_mount_has_no_controllers(tmp_path: Path) -> None:
    root = v1_tree(tmp_path, "2147483648", "200000")
    write(
        root,
        {
            "proc/self/mountinfo": V1_MOUNTINFO + "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
            "sys/fs/cgroup/unified/cgroup.controllers": "\n",
            "sys/fs/cgroup/unified/memory.max": "1\n",  # would be absurd if read
        },
    )
    group = cgroup.find(root)
    assert cgroup.memory_limit(group) == 2 * 1024**3
    assert cgroup.cpu_limit(group) == 2.0


def test_no_cgroup_files_means_no_limit(tmp_path: Path) -> None:
    group = cgroup.find(tmp_path)
    assert (cgroup.memory_limit(group), cgroup.cpu_limit(group)) == (None, None)


def test_sampler_caps_by_the_cgroup_and_falls_back_to_physical_memory(tmp_path: Path) -> None:
    limited = ProcessSampler(cgroup_root=str(v2_tree(tmp_path / "a", "536870912", "50000 100000")))
    assert limited.memory_limit() == 512 * 1024 * 1024
    assert limited.cpus() == 0.5  # the quota is below the affinity mask
    unlimited = ProcessSampler(cgroup_root=str(v2_tree(tmp_path / "b", "max", "max 100000")))
    assert unlimited.memory_limit() == psutil.virtual_memory().total
    assert unlimited.cpus() == len(os.sched_getaffinity(0))


def test_real_system_limit_is_the_cgroup_limit_or_physical_memory() -> None:
    sampler = ProcessSampler()
    physical = psutil.virtual_memory().total
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    assert physical == int(meminfo["MemTotal"].split()[0]) * 1024
    group = cgroup.find("/")
    limit = cgroup.memory_limit(group)
    expected = physical if limit is None else min(limit, physical)
    assert sampler.memory_limit() == expected
    assert 0 < sampler.cpus() <= len(os.sched_getaffinity(0))


def _own_v1_memory_cgroup() -> Path | None:
    group = cgroup.find("/")
    if group.memory_v2 or not group.memory_dirs:
        return None
    return group.memory_dirs[0]


CHILD = """
import sys
from otel_reliability.instrumentation.process import ProcessSampler
print(ProcessSampler().memory_limit())
"""


def test_real_cgroup_limit_is_reported_by_a_process_inside_it() -> None:
    """A child cgroup with a 300 MB limit, made under this process's own v1 memory cgroup (root only)."""
    parent = _own_v1_memory_cgroup()
    if parent is None or os.geteuid() != 0:
        pytest.skip("needs root and a v1 memory cgroup to create a child cgroup in")
    child = parent / f"otel-reliability-test-{uuid.uuid4().hex[:8]}"
    try:
        child.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot create a cgroup here: {exc}")
    try:
        limit = 300 * 1024 * 1024
        (child / "memory.limit_in_bytes").write_text(str(limit))
        # The child joins the cgroup itself before measuring (preexec_fn runs in the forked child).
        out = subprocess.run(
            [sys.executable, "-c", CHILD],
            preexec_fn=lambda: (child / "cgroup.procs").write_text(str(os.getpid())),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert int(out.stdout.strip()) == limit
    finally:
        child.rmdir()
