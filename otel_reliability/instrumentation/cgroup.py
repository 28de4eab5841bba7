"""The CPU and memory limits the kernel enforces on this process's control group (cgroup v2 or v1).

Pure file parsing, no psutil and no global state: every function takes the filesystem ``root`` ("/" in
production, a fixture directory in tests), so each layout (v2, v1, hybrid hosts, containers whose cgroup
namespace shows a nested path) is tested with plain files.

How a limit is found:
1. ``/proc/self/mountinfo`` says where each hierarchy is mounted: the ``cgroup2`` mount, and for v1 the
   ``cgroup`` mounts whose super options name the ``memory`` or ``cpu`` controller.
2. ``/proc/self/cgroup`` gives this process's path in each hierarchy (``0::/path`` for v2,
   ``N:cpu,cpuacct:/path`` for v1); the mount's own root is stripped from it, as container runtimes mount
   the cgroup namespace's root.
3. The limit files are read in that directory and in each ancestor up to the mount point; the smallest
   limit wins (a parent's limit caps its children). "max" (v2), -1 (v1 quota) or a v1 byte limit near
   2^63 mean unlimited.

A hybrid host (v1 controllers plus an empty v2 ``unified`` mount, like this project's CI machine) has its
controllers in v1: a v2 directory is only used when its ``cgroup.controllers`` lists the controller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

# v1 reports "no limit" as LONG_MAX rounded down to a page; anything this large is not a real limit.
_V1_UNLIMITED = 1 << 62


@dataclass(frozen=True)
class Cgroup:
    """Directories (outermost last) whose limit files apply to this process, per controller."""

    memory_dirs: tuple[Path, ...] = ()
    cpu_dirs: tuple[Path, ...] = ()
    memory_v2: bool = False
    cpu_v2: bool = False


def find(root: str | Path = "/") -> Cgroup:
    """Locate this process's memory and cpu cgroup directories under ``root`` (empty when none)."""
    root = Path(root)
    mounts = _mounts(root)
    memberships = _memberships(root)
    memory: tuple[Path, ...] = ()
    cpu: tuple[Path, ...] = ()
    memory_v2 = cpu_v2 = False
    v2 = mounts.get("cgroup2")
    if v2 is not None and "" in memberships:
        dirs = _chain(root, v2, memberships[""])
        controllers = _read(dirs[0] / "cgroup.controllers") if dirs else None
        names = set((controllers or "").split())
        if "memory" in names:
            memory, memory_v2 = dirs, True
        if "cpu" in names:
            cpu, cpu_v2 = dirs, True
    if not memory and "memory" in mounts and "memory" in memberships:
        memory = _chain(root, mounts["memory"], memberships["memory"])
    if not cpu and "cpu" in mounts and "cpu" in memberships:
        cpu = _chain(root, mounts["cpu"], memberships["cpu"])
    return Cgroup(memory, cpu, memory_v2, cpu_v2)


def memory_limit(group: Cgroup) -> int | None:
    """The smallest memory limit in bytes over the cgroup and its ancestors, or None when unlimited."""
    limits: list[int] = []
    for directory in group.memory_dirs:
        raw = _read(directory / ("memory.max" if group.memory_v2 else "memory.limit_in_bytes"))
        if raw is None or raw == "max":
            continue
        try:
            value = int(raw)
        except ValueError:
            continue
        if value < _V1_UNLIMITED:
            limits.append(value)
    return min(limits) if limits else None


def cpu_limit(group: Cgroup) -> float | None:
    """The smallest CPU quota in CPUs (quota / period) over the cgroup and its ancestors, or None."""
    limits: list[float] = []
    for directory in group.cpu_dirs:
        if group.cpu_v2:
            raw = _read(directory / "cpu.max")
            parts = (raw or "").split()
            quota, period = (parts[0], parts[1]) if len(parts) == 2 else ("max", "100000")
        else:
            quota = _read(directory / "cpu.cfs_quota_us") or "-1"
            period = _read(directory / "cpu.cfs_period_us") or "100000"
        if quota in ("max", "-1"):
            continue
        try:
            cpus = int(quota) / int(period)
        except (ValueError, ZeroDivisionError):
            continue
        if cpus > 0 and math.isfinite(cpus):
            limits.append(cpus)
    return min(limits) if limits else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _mounts(root: Path) -> dict[str, tuple[str, str]]:
    """{"cgroup2" | controller: (mount root inside the hierarchy, mount point)} from mountinfo."""
    found: dict[str, tuple[str, str]] = {}
    text = _read(root / "proc/self/mountinfo") or ""
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        hierarchy_root, mount_point = _unescape(fields[3]), _unescape(fields[4])
        fstype, super_options = tail[0], tail[2].split(",")
        if fstype == "cgroup2":
            found.setdefault("cgroup2", (hierarchy_root, mount_point))
        elif fstype == "cgroup":
            for controller in ("memory", "cpu"):
                if controller in super_options:
                    found.setdefault(controller, (hierarchy_root, mount_point))
    return found


def _memberships(root: Path) -> dict[str, str]:
    """{"" (v2) | controller: path} from /proc/self/cgroup."""
    found: dict[str, str] = {}
    for line in (_read(root / "proc/self/cgroup") or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            found[""] = path
        for controller in controllers.split(","):
            if controller in ("memory", "cpu"):
                found[controller] = path
    return found


def _chain(root: Path, mount: tuple[str, str], path: str) -> tuple[Path, ...]:
    """The cgroup's directory and its ancestors up to the mount point, innermost first, existing ones only."""
    hierarchy_root, mount_point = mount
    relative = path
    if hierarchy_root != "/" and (path == hierarchy_root or path.startswith(hierarchy_root + "/")):
        relative = path[len(hierarchy_root) :]
    base = root / mount_point.lstrip("/")
    parts = [p for p in relative.split("/") if p and p != ".."]
    dirs: list[Path] = []
    for depth in range(len(parts), -1, -1):
        candidate = base.joinpath(*parts[:depth])
        if candidate.is_dir():
            dirs.append(candidate)
    return tuple(dirs)


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040 ...).
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
