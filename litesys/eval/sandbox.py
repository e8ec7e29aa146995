"""Run one untrusted Python program in a throw-away sandbox process.

What a run gets (all set before any job code runs, by a trusted prologue in the child):
  * its own session and process group; the whole group is SIGKILLed when the run ends or overruns;
  * a wall-clock limit enforced here, plus RLIMIT_CPU as a backstop;
  * RLIMIT_AS (memory), RLIMIT_NPROC (tasks: processes *and* threads), RLIMIT_FSIZE, RLIMIT_NOFILE, no core;
  * a fresh working directory (mode 700) removed afterwards, and an environment with no inherited variables;
  * its stdout read back with a size cap, or streamed to a ``sink`` that may stop the run (stdin is /dev/null,
    stderr is discarded).

When the grader is root, RLIMIT_NPROC does not bind, so each worker slot runs programs as its own
unprivileged uid (``uid_base + slot``, with no passwd/group entry): the process cap holds, the program can
write only its own directory and the world-writable temp dirs (cleaned after each run), it cannot signal
the grader or programs in other slots, and every process left under that uid is killed after the run.
Not covered: network access, reading world-readable files, CPU/disk bandwidth, inode exhaustion.
"""
from __future__ import annotations

import grp
import json
import math
import os
import pwd
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# Runs inside the child before any job code: apply limits (irreversibly lowering the hard limits too),
# then execute the job script in a fresh namespace. Kept compatible with old Pythons (3.8+).
_PROLOGUE = r"""
import json, os, resource, signal, sys
_cfg = json.loads(sys.argv[1])
if _cfg["uid"] is not None and (os.getuid() != _cfg["uid"] or os.geteuid() != _cfg["uid"]):
    os._exit(97)
def _cap(which, value, hard_extra=0):
    soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
        hard_extra = min(hard_extra, hard - value)
    resource.setrlimit(which, (value, value + hard_extra))
_cap(resource.RLIMIT_AS, _cfg["memory"])
_cap(resource.RLIMIT_FSIZE, _cfg["fsize"])
_cap(resource.RLIMIT_NOFILE, _cfg["nofile"])
_cap(resource.RLIMIT_CORE, 0)
_cap(resource.RLIMIT_CPU, _cfg["cpu"], 1)
_cap(resource.RLIMIT_NPROC, _cfg["nproc"])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write fails with EFBIG instead of killing
os.umask(0o077)
sys.argv = sys.argv[2:]
with open(sys.argv[0]) as _f:
    _src = _f.read()
_g = {"__name__": "__main__", "__file__": sys.argv[0], "__builtins__": __builtins__}
del _cfg, _cap, _f
exec(compile(_src, sys.argv[0], "exec"), _g)
"""

_WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm")
_PROLOGUE_UID_MISMATCH = 97


class SandboxError(RuntimeError):
    """The sandbox itself cannot work here (no usable interpreter, uid range taken, ...)."""


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = 4 << 30
    max_tasks: int = 4  # RLIMIT_NPROC for the slot uid: the program's own process plus 3 threads/children
    file_bytes: int = 16 << 20
    open_files: int = 256
    read_bytes: int = 4 << 20  # cap on the stdout read back from the program


@dataclass
class RunResult:
    stdout: bytes
    returncode: int | None  # None: the process could not be reaped (stuck in the kernel)
    timed_out: bool
    truncated: bool  # stdout exceeded Limits.read_bytes; the program was killed there
    elapsed_s: float
    exited_early: bool = False  # the leader exited while a descendant still held stdout open

    @property
    def signal(self) -> int | None:
        return -self.returncode if self.returncode is not None and self.returncode < 0 else None


@dataclass
class _Slot:
    uid: int | None
    gid: int | None
    pgids: set[int] = field(default_factory=set)


class Sandbox:
    """Owns the sandbox root directory, the interpreter and the per-slot uids. Thread-safe per slot."""

    def __init__(self, limits: Limits | None = None, python: str | None = None, uid_base: int = 65000,
                 tmp_root: str | None = None) -> None:
        self.limits = limits or Limits()
        self.is_root = os.geteuid() == 0
        self.uid_base = uid_base
        self._slots: dict[int, _Slot] = {}
        self._lock = threading.Lock()
        self._kill_bin = shutil.which("kill", path="/usr/bin:/bin")
        self.python_version = ""  # major.minor of the interpreter picked below
        root_parent = tmp_root or tempfile.gettempdir()
        self.root = Path(tempfile.mkdtemp(prefix="litesys-sandbox-", dir=root_parent))
        os.chmod(self.root, 0o711)  # slot uids may traverse it (to reach their own dirs) but not list it
        self.shared = self.root / "shared"  # read-only files for programs (e.g. test cases), root-owned
        self.shared.mkdir(mode=0o711)
        try:
            self.python = self._pick_python(python)
        except BaseException:
            self.close()
            raise

    # ---- slots -------------------------------------------------------------------------------------------
    def _slot(self, slot: int) -> _Slot:
        with self._lock:
            if slot in self._slots:
                return self._slots[slot]
            if not self.is_root:
                self._slots[slot] = _Slot(None, None)
                return self._slots[slot]
            uid = self.uid_base + slot
            if uid >= 65534 or self.uid_base < 1000:
                raise SandboxError(f"sandbox uid {uid} is outside 1000..65533: lower --sandbox_uid_base or --workers")
            for lookup, what in ((pwd.getpwuid, "user"), (grp.getgrgid, "group")):
                try:
                    name = lookup(uid)[0]
                except KeyError:
                    continue
                raise SandboxError(f"sandbox uid/gid {uid} belongs to {what} {name!r}: pass --sandbox_uid_base "
                                   "with a range of unused ids")
            self._slots[slot] = _Slot(uid, uid)
        self._sweep(self._slots[slot])  # leftovers of an earlier, crashed grader using the same uid
        return self._slots[slot]

    def _uid_tasks(self, uid: int) -> tuple[list[int], int]:
        """Live pids whose real or effective uid is ``uid`` (from /proc/*/status, which prctl cannot hide), and
        how many zombies it has: those are harmless but count against RLIMIT_NPROC until init reaps them."""
        live, zombies = [], 0
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/status") as f:
                    status = f.read()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if str(uid) not in fields.get("Uid", "").split()[:2]:
                continue
            if fields.get("State", "").split()[:1] == ["Z"]:
                zombies += 1
            else:
                live.append(int(name))
        return live, zombies

    def _count_tasks(self, uid: int) -> int:
        live, zombies = self._uid_tasks(uid)
        total = zombies
        for pid in live:
            try:
                total += len(os.listdir(f"/proc/{pid}/task"))
            except OSError:
                pass
        return total

    def _sweep(self, slot: _Slot) -> bool:
        """Kill every process left under the slot's uid; True when none is left alive."""
        if slot.uid is None:
            return True
        for _ in range(50):
            live = self._uid_tasks(slot.uid)[0]
            if not live:
                return True
            if self._kill_bin:  # kill(-1) as that uid: one atomic sweep, no race with fork
                subprocess.run([self._kill_bin, "-KILL", "-1"], user=slot.uid, group=slot.gid, extra_groups=[],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10, env={})
            else:
                for pid in live:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
            time.sleep(0.005)
        return not self._uid_tasks(slot.uid)[0]

    def check_slots(self, n: int) -> None:
        """Validate (and sweep) the uids of slots 0..n-1 now, so that a taken uid fails before any grading."""
        for i in range(n):
            self._slot(i)

    def kill_slot(self, slot: int) -> None:
        """Kill everything a slot is running (used by a watchdog on a stuck worker)."""
        s = self._slot(slot)
        for pgid in list(s.pgids):
            _killpg(pgid)
        self._sweep(s)

    # ---- interpreter ---------------------------------------------------------------------------------------
    def _pick_python(self, python: str | None) -> str:
        candidates = [python] if python else [sys.executable, "/usr/bin/python3", "/usr/local/bin/python3",
                                              shutil.which("python3")]
        tried = []
        probe = "import sys\nprint('ok', sys.version_info[0], sys.version_info[1])\n"
        for cand in dict.fromkeys(c for c in candidates if c):
            try:
                res = self.run(0, {"probe.py": probe.encode()}, "probe.py", [], wall_s=30, python=cand)
            except OSError:  # not executable by the slot uid
                tried.append(cand)
                continue
            out = res.stdout.decode(errors="replace").split()
            if res.returncode == 0 and out[:1] == ["ok"] and (int(out[1]), int(out[2])) >= (3, 9):
                self.python_version = f"{out[1]}.{out[2]}"
                return cand
            tried.append(cand)
        who = f"uid {self.uid_base}" if self.is_root else "this user"
        raise SandboxError(f"no Python >= 3.9 that {who} can run from {self.root} (tried {', '.join(tried)}): pass "
                           "--sandbox_python with a world-readable interpreter such as /usr/bin/python3, and point "
                           "TMPDIR at a folder every user can reach")

    # ---- one run -------------------------------------------------------------------------------------------
    def run(self, slot: int, files: dict[str, bytes], script: str, args: list[str], wall_s: float,
            python: str | None = None, sink: Callable[[bytes], bool] | None = None,
            extra_tasks: int = 0) -> RunResult:
        """Run ``script`` (one of ``files``, written into a fresh working dir) with ``args``; never blocks for
        much longer than ``wall_s``. With ``sink``, stdout is not collected: each chunk goes to ``sink``, and the
        run is killed as soon as it returns False. ``extra_tasks`` raises the task cap for this run (a harness
        that starts the program as its own child counts itself)."""
        s = self._slot(slot)
        lim = self.limits
        workdir = Path(tempfile.mkdtemp(prefix=f"run{slot}-", dir=self.root))
        try:
            for name, data in files.items():
                (workdir / name).write_bytes(data)
                os.chmod(workdir / name, 0o644)
            # RLIMIT_NPROC counts every task of the uid, zombies of earlier runs included (and, when not root,
            # all of this user's processes): cap relative to what is there now.
            if s.uid is not None:
                os.chown(workdir, s.uid, s.gid)
            nproc = lim.max_tasks + extra_tasks + self._count_tasks(s.uid if s.uid is not None else os.getuid())
            cfg = {"uid": s.uid, "memory": lim.memory_bytes, "fsize": lim.file_bytes, "nofile": lim.open_files,
                   "cpu": int(math.ceil(wall_s)) + 1, "nproc": nproc}
            env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir),
                   "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                   "MKL_NUM_THREADS": "1"}
            kw = dict(user=s.uid, group=s.gid, extra_groups=[]) if s.uid is not None else {}
            argv = [python or self.python, "-I", "-c", _PROLOGUE, json.dumps(cfg), str(workdir / script), *args]
            return self._communicate(s, argv, env, workdir, wall_s, kw, sink)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            self._clean_world_writable(s)

    def _communicate(self, s: _Slot, argv: list[str], env: dict, workdir: Path, wall_s: float,
                     kw: dict, sink: Callable[[bytes], bool] | None = None) -> RunResult:
        lim = self.limits
        start = time.monotonic()
        deadline = start + wall_s
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                cwd=workdir, env=env, start_new_session=True, close_fds=True, **kw)
        s.pgids.add(proc.pid)
        fd = proc.stdout.fileno()
        os.set_blocking(fd, False)
        buf = bytearray()
        cap = lim.read_bytes
        if sink is not None:  # chunks go to the sink, at most 1 MiB per turn so that the deadline is checked
            def take(fd: int, buf: bytearray, _cap: int) -> tuple[bool, bool]:
                for _ in range(16):
                    try:
                        chunk = os.read(fd, 1 << 16)
                    except BlockingIOError:
                        return False, False
                    if not chunk:
                        return True, False
                    if not sink(chunk):
                        return False, True
                return False, False
        else:
            take = _drain
        timed_out = truncated = exited_early = False
        try:
            while True:
                now = time.monotonic()
                if now >= deadline:
                    timed_out = True
                    break
                ready, _, _ = select.select([fd], [], [], min(0.05, deadline - now))
                eof = False
                if ready:
                    eof, over = take(fd, buf, cap)
                    if over:  # past the cap, or the sink asked to stop
                        truncated = sink is None
                        break
                if eof:
                    break
                if _has_exited(proc.pid):  # a child may still hold the pipe: take what is there and stop
                    _, over = take(fd, buf, cap)
                    truncated = over and sink is None
                    exited_early = True
                    break
        finally:
            _killpg(proc.pid)  # before reaping, so the pgid cannot have been reused
            try:
                returncode = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                returncode = None
            proc.stdout.close()
            s.pgids.discard(proc.pid)
            self._sweep(s)
        return RunResult(bytes(buf[:lim.read_bytes]), returncode, timed_out, truncated, time.monotonic() - start,
                         exited_early)

    def _clean_world_writable(self, s: _Slot) -> None:
        if s.uid is None:
            return
        for top in _WORLD_WRITABLE:
            try:
                entries = list(os.scandir(top))
            except OSError:
                continue
            for e in entries:
                try:
                    if e.stat(follow_symlinks=False).st_uid != s.uid:
                        continue
                    if e.is_dir(follow_symlinks=False):
                        shutil.rmtree(e.path, ignore_errors=True)
                    else:
                        os.unlink(e.path)
                except OSError:
                    pass

    def close(self) -> None:
        for slot in list(self._slots.values()):
            for pgid in list(slot.pgids):
                _killpg(pgid)
            self._sweep(slot)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _drain(fd: int, buf: bytearray, cap: int) -> tuple[bool, bool]:
    """Read what is available; returns (eof, over_cap)."""
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return False, False
        if not chunk:
            return True, False
        buf += chunk
        if len(buf) > cap:
            return False, True


def _has_exited(pid: int) -> bool:
    try:  # WNOWAIT: leave it a zombie so its pid (our pgid) stays reserved until we killpg and reap
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
