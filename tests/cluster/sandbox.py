"""Start one container process with its volumes mounted and, if asked, a read-only root.

The kubelet runs this file as a script inside fresh user and mount namespaces::

    unshare --user --map-root-user --mount --propagation private -- \\
        python -I -S sandbox.py SPEC -- ARGV...

``SPEC`` is a JSON object::

    {
      "mounts": [{"source": "/host/dir", "target": "/tmp", "readOnly": false}, ...],
      "readOnlyRoot": true,          # the container's securityContext.readOnlyRootFilesystem
      "workingDir": "/work/main",    # chdir here once the mounts are in place
      "image": ["/work/main", "/work/main/.venv"],  # paths a volume must not hide (see below)
      "reportFd": 5                  # a pipe to the kubelet (inherited), or absent
    }

On the report pipe the sandbox writes ``created PATH`` for each directory it made on this machine
for a missing mount point (the kubelet removes them with the pod), ``ready`` just before the exec
and ``error MESSAGE`` when the container cannot start; the pipe closes at the exec.

The namespaces are private to this process and whatever it starts, so none of the mounts is seen
by (or propagates to) the rest of the machine. In order:

1. open every volume's host directory (before anything is mounted: a later mount may hide a
   source, e.g. a state directory under ``/tmp`` once ``/tmp`` is itself a volume);
2. bind each volume onto its ``mountPath``, parents before children, creating a missing mount
   point while the root is still writable (or failing with a clear message if it cannot be
   created), and make ``readOnly`` volumes read-only. This machine's filesystem stands in for
   the image, so the ``image`` paths (the kubelet's working directory, the Python installation)
   are the image's content: a volume mounted over a parent of one of them (``/tmp`` over a
   checkout in ``/tmp/ci``) gets that path bound back inside it, as the image's own files, so
   the volume hides what an image's ``/tmp`` would hold and nothing the container runs;
3. with ``readOnlyRoot``: remount every other mount the process can reach read-only: ``/`` and
   separate mounts such as ``/work`` or ``/home``, but not ``/proc``, ``/sys``, ``/dev`` (with
   ``/dev/shm``, writable in a container too) nor the volumes;
4. enter one more (nested) user and mount namespace, which makes the kernel *lock* the mounts'
   flags and the volumes over what they hide, so the process -- root in its namespace -- cannot
   simply remount them writable again or unmount a volume;
5. ``chdir`` to the working directory and ``exec`` the container's argv with this environment.

Anything that goes wrong before the exec is reported (pipe and stderr) and ends the
process with exit code 128, which the kubelet reports as ``StartError`` (as a real runtime does
when it cannot create the container). It never falls back to running the container writable.

It runs before every container start, so it imports nothing but the standard library's basics
(``-I -S``: no site packages, no ``PYTHON*`` variables) and takes a few milliseconds.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import sys
from typing import Any, NoReturn

# mount(2) flags (linux/mount.h).
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000

# Per-mount options in /proc/self/mountinfo that a bind remount must repeat: in a user namespace
# these flags are locked on mounts inherited from the parent namespace, and a remount that would
# drop one fails with EPERM.
_LOCKED_OPTIONS = {
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME,
    "relatime": MS_RELATIME,
}
# Pseudo filesystems the container keeps as they are (Kubernetes mounts its own there).
_KEEP = ("/proc", "/sys", "/dev")
_START_ERROR = 128

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_void_p,
]
_libc.unshare.argtypes = [ctypes.c_int]


class StartError(Exception):
    """The container cannot be started as specified; the message says why."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.errno = code  # set when a system call failed


class Mount:
    """One line of /proc/self/mountinfo."""

    def __init__(self, line: str) -> None:
        fields = line.split()
        self.id, self.parent = int(fields[0]), int(fields[1])
        self.point = _unescape(fields[4])
        self.options = set(fields[5].split(","))

    def flags(self) -> int:
        """The flags a bind remount of this mount must keep (see ``_LOCKED_OPTIONS``)."""
        flags = 0
        for option, flag in _LOCKED_OPTIONS.items():
            if option in self.options:
                flags |= flag
        if not self.options & {"noatime", "relatime"}:
            flags |= MS_STRICTATIME  # neither shown: strictatime, which must be asked for
        return flags


def main(argv: list[str]) -> NoReturn:
    if len(argv) < 4 or argv[2] != "--":
        sys.stderr.write("usage: sandbox.py SPEC -- ARGV...\n")
        sys.exit(2)
    spec: dict[str, Any] = json.loads(argv[1])
    command = argv[3:]
    # The kubelet reads what the sandbox reports from a pipe (a file opened for writing would
    # pin its mount writable: the remount fails with EBUSY). Not inherited by the container.
    report = spec.get("reportFd")
    if report is not None:
        os.set_inheritable(report, False)
    try:
        sources = _open_sources(spec["mounts"])
        image = _open_image(spec.get("image") or [])
        before = {m.id for m in _mounts()}
        kept = _bind_volumes(spec["mounts"], sources, report, image)
        # The volumes stay writable (unless readOnly); image paths bound back are the image's.
        volumes = {m.id for m in _mounts() if m.point not in kept} - before
        if spec.get("readOnlyRoot"):
            _remount_root_read_only(volumes)
        _lock_mounts()
        workdir = str(spec.get("workingDir") or "/")
        try:
            os.chdir(workdir)
        except OSError as exc:
            raise StartError(f"workingDir {workdir}: {exc.strerror}") from None
    except StartError as exc:
        _fail(report, f"the test cluster could not set up the container: {exc}")
    if report is not None:
        _report(report, "ready", "")  # set up; the pipe closes at the exec
    try:
        os.execvpe(command[0], command, os.environ)
    except OSError as exc:
        # The kubelet's own wording when it starts a process without the sandbox.
        detail = f"[Errno {exc.errno}] {exc.strerror}: {command[0]!r}"
        _fail(report, f"exec {command[0]!r} failed: {detail}")


def _open_sources(mounts: list[dict[str, Any]]) -> list[int]:
    """An O_PATH descriptor per volume source; binds use /proc/self/fd/N, immune to later mounts."""
    fds = []
    for mount in mounts:
        try:
            fds.append(os.open(mount["source"], os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
        except OSError as exc:
            raise StartError(f"volume source {mount['source']}: {exc.strerror}") from None
    return fds


def _open_image(paths: list[str]) -> dict[str, int]:
    """An O_PATH descriptor per existing image path (by its real path), opened before any mount."""
    fds: dict[str, int] = {}
    for path in paths:
        real = os.path.realpath(path)
        if real not in fds and os.path.isdir(real):
            fds[real] = os.open(real, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return fds


def _bind_volumes(
    mounts: list[dict[str, Any]], fds: list[int], report: int | None, image: dict[str, int]
) -> set[str]:
    """Bind the volumes; return the image paths bound back inside them."""
    # Parents first, so /data/cache lands inside the /data volume rather than under it.
    order = sorted(range(len(mounts)), key=lambda i: _depth(mounts[i]["target"]))
    done: list[str] = []
    kept: set[str] = set()
    for index in order:
        target = os.path.normpath(mounts[index]["target"])
        if not os.path.isdir(target):
            made = _make_mount_point(target)
            if report is not None and not any(_under(made, point) for point in done):
                # Outside every volume: a directory on this machine, which the kubelet removes
                # when the pod goes (a directory made inside a volume goes with the volume).
                _report(report, "created", made)
        target = os.path.realpath(target)  # as mountinfo shows it (/var/run is /run)
        _mount(f"/proc/self/fd/{fds[index]}", target, MS_BIND)
        if mounts[index].get("readOnly"):
            top = [m for m in _mounts() if m.point == target][-1]  # the bind just made
            _mount(None, target, MS_BIND | MS_REMOUNT | MS_RDONLY | top.flags())
        done.append(target)
        for path in sorted(image, key=len):
            if path == target or not _under(path, target) or any(_under(path, k) for k in kept):
                continue
            try:
                os.makedirs(path, exist_ok=True)  # inside the (writable) volume
            except OSError as exc:
                raise StartError(
                    f"mountPath {target} would hide {path}, which the test cluster's pods run "
                    f"from, and a mount point cannot be made in the volume ({exc.strerror})"
                ) from None
            _mount(f"/proc/self/fd/{image[path]}", path, MS_BIND)
            kept.add(path)
    return kept


def _make_mount_point(target: str) -> str:
    """Create ``target`` (and missing parents); return the topmost directory created."""
    if os.path.lexists(target):
        raise StartError(f"mountPath {target} exists on this machine and is not a directory")
    top = target
    while not os.path.lexists(os.path.dirname(top)):
        top = os.path.dirname(top)
    try:
        os.makedirs(target)
    except OSError as exc:
        raise StartError(
            f"mountPath {target} does not exist on this machine and cannot be created "
            f"({exc.strerror}); the test cluster's pods see this machine's filesystem, so use "
            "a mountPath whose parent directory is writable here"
        ) from None
    return top


def _remount_root_read_only(volumes: set[int]) -> None:
    """Make every reachable mount but the volumes and /proc, /sys, /dev read-only."""
    skipped = set(volumes)
    for mount in _reachable(_mounts()):
        if mount.id in skipped or "ro" in mount.options:
            continue
        if any(_under(mount.point, keep) for keep in _KEEP):
            skipped.add(mount.id)
            continue
        try:
            _mount(None, mount.point, MS_BIND | MS_REMOUNT | MS_RDONLY | mount.flags())
        except StartError as exc:
            # EACCES: the mount point lies behind a directory this user cannot search (another
            # user's /run/user/UID); the container, with the same credentials, cannot reach
            # it either. Anything else is fatal: the root must not be left writable.
            if exc.errno != errno.EACCES:
                raise
            skipped.add(mount.id)
    # Check rather than trust: every reachable mount still writable is one skipped above.
    for mount in _reachable(_mounts()):
        if "ro" not in mount.options and mount.id not in skipped:
            raise StartError(f"{mount.point} is still writable after the remount")


def _lock_mounts() -> None:
    """Enter a nested user + mount namespace: the copied mounts' read-only flags become locked.

    The kernel locks the flags of mounts that a less privileged mount namespace inherits, so
    ``mount -o remount,rw`` (or unmounting a volume to reveal what lies beneath) fails with
    EPERM in the container, as it does for a container without CAP_SYS_ADMIN. The nested
    namespace maps the same single user (root here, this machine's user outside).
    """
    uid, gid = os.getuid(), os.getgid()
    if _libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
        code = ctypes.get_errno()
        raise StartError(f"unshare: {os.strerror(code)}", code)
    for path, text in (
        ("/proc/self/uid_map", f"{uid} {uid} 1\n"),
        ("/proc/self/setgroups", "deny\n"),  # required before an unprivileged gid_map
        ("/proc/self/gid_map", f"{gid} {gid} 1\n"),
    ):
        with open(path, "w") as out:
            out.write(text)


def _reachable(mounts: list[Mount]) -> list[Mount]:
    """The mounts a path lookup can reach: not hidden under another mount.

    A mount is hidden when some other mount that is not one of its ancestors sits at or above
    its mount point: a second mount stacked on the same path, or a mount of a parent directory
    made later (remounting by path would hit the mount on top, not the hidden one).
    """
    by_id = {m.id: m for m in mounts}

    def ancestors(mount: Mount) -> set[int]:
        seen = {mount.id}
        while mount.parent in by_id and mount.parent not in seen:
            mount = by_id[mount.parent]
            seen.add(mount.id)
        return seen

    out = []
    for mount in mounts:
        mine = ancestors(mount)
        if not any(o.id not in mine and _under(mount.point, o.point) for o in mounts):
            out.append(mount)
    return out


def _mounts() -> list[Mount]:
    with open("/proc/self/mountinfo") as lines:
        return [Mount(line) for line in lines if line.strip()]


def _mount(source: str | None, target: str, flags: int) -> None:
    encoded = source.encode() if source is not None else None
    if _libc.mount(encoded, target.encode(), None, flags, None) != 0:
        code = ctypes.get_errno()
        action = f"bind {source}" if source else "remount read-only"
        raise StartError(f"{action} {target}: {os.strerror(code)}", code)


def _under(path: str, parent: str) -> bool:
    return parent == "/" or path == parent or path.startswith(parent.rstrip("/") + "/")


def _depth(path: str) -> int:
    return len([part for part in os.path.normpath(path).split("/") if part])


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040 ...)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _report(fd: int, kind: str, text: str) -> None:
    """One line to the kubelet: ``created PATH`` or ``error MESSAGE`` (no newlines inside)."""
    os.write(fd, f"{kind} {text.replace(chr(10), ' ')}\n".encode())


def _fail(report: int | None, message: str) -> NoReturn:
    """Tell the container log (stderr) and the kubelet (``error`` line) why; exit 128."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    if report is not None:
        _report(report, "error", message)
    os._exit(_START_ERROR)


if __name__ == "__main__":
    main(sys.argv)
