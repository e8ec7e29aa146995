"""Hostile programs through grade_lcb.py: each graded within bounded time, without harm to the grader, the
machine, files next to the grader, or the other samples' verdicts.

The dangerous ones (fork bomb, 20 GB allocation) run only after a probe, in the same test, shows that the
process and memory caps bind for the very limits the grader is given.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from test_lcb_data import problem
from test_lcb_grade import ADD, write_generations

from litesys.eval.sandbox import Limits, Sandbox

REPO = Path(__file__).resolve().parents[1]
UID_BASE = 65000
MEMORY_MB, MAX_TASKS, WORKERS = 1024, 4, 2

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the full sandbox drops to unprivileged uids: run as root")

# Harmless whether or not the caps bind: an untouched mapping reserves no memory, and at most 8 children sleep.
PROBE = """
import json, mmap, os, resource, time
out = {"uid": os.getuid(), "nproc": resource.getrlimit(resource.RLIMIT_NPROC)[0]}
try:
    mmap.mmap(-1, SIZE)
    out["mapped"] = True
except (OSError, MemoryError):
    out["mapped"] = False
forks = 0
for _ in range(8):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    forks += 1
out["forks"] = forks
print(json.dumps(out))
"""


def _live_tasks(uids: range) -> list[str]:
    """Non-zombie processes running as any of ``uids``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields["Uid"].split()[0]) in uids and not fields["State"].strip().startswith("Z"):
            found.append(f"{pid} {fields['Name'].strip()}")
    return found


def probe(limits: Limits, slot: int, size: int) -> dict:
    with Sandbox(limits, uid_base=UID_BASE) as sb:
        res = sb.run(slot, {"probe.py": PROBE.replace("SIZE", str(size)).encode()}, "probe.py", [], wall_s=30)
    return json.loads(res.stdout)


def test_default_limits_bind():
    got = probe(Limits(), 0, 5 << 30)  # the default 4 GiB cap refuses a 5 GiB mapping
    assert got == {"uid": UID_BASE, "nproc": Limits().max_tasks, "mapped": False, "forks": Limits().max_tasks - 1}


SECRET = "hunter2-do-not-leak"
ENV = problem("env", public=[{"input": "x\n", "output": "clean\n", "testtype": "stdin"}])
KEEP = "the grader's neighbour"


def hostile_cases(sentinel: Path, escape: str) -> list[tuple]:
    """(name, problem, code, verdicts it may get: one set for both I/O modes, or a set per mode)."""
    sum_ = "a, b = map(int, input().split())\nprint(a + b)\n"
    bad = ("runtime error", "wrong answer", "time limit")
    return [
        ("correct", ADD, sum_, {"passed"}),
        ("wrong", ADD, "print(3)", {"wrong answer"}),
        ("infinite loop", ADD, "while True:\n    pass", {"time limit"}),
        ("fork bomb", ADD, "import os, posix\nwhile True:\n    try:\n        if posix.fork() == 0:\n"
                           "            os.setsid()\n    except OSError:\n        pass", {"time limit"}),
        ("20 GB", ADD, "x = bytearray(20 * 10**9)\n" + sum_, {"runtime error"}),
        ("write outside", ADD, f"import posix\nfor p in [{str(sentinel)!r}, '../escape', {escape!r}]:\n"
                               "    try:\n        with open(p, 'w') as f:\n            f.write('pwned')\n"
                               "    except OSError:\n        pass\ntry:\n"
                               f"    posix.unlink({str(sentinel)!r})\nexcept OSError:\n    pass\n" + sum_,
         {"passed"}),
        ("read environment", ENV, "import os\nleak = 'hunter2' in repr(dict(os.environ))\ntry:\n    leak = leak or "
                                  "b'hunter2' in open(f'/proc/{os.getppid()}/environ', 'rb').read()\n"
                                  "except OSError:\n    pass\ninput()\nprint('leak' if leak else 'clean')",
         {"passed"}),
        ("kill parent", ADD, "import os\nos.kill(os.getppid(), 9)\n" + sum_, {"runtime error"}),
        ("kill parent, guard bypassed", ADD, "import os, posix\nposix.kill(os.getppid(), 9)\n" + sum_,
         {"runtime error"}),
        # as a script it shares its uid with the harness that started it, and kills it too
        ("kill everything it can", ADD, "import posix\ntry:\n    posix.kill(-1, 9)\nexcept OSError:\n    pass\n"
                                        + sum_, {"lcb_runner": {"passed"}, "script": {"runtime error"}}),
        ("print 1 GB at once", ADD, "print('x' * (1 << 30))", {"runtime error", "wrong answer"}),
        # the output cap (64 M characters, ~0.2-0.4 s alone) or, on a loaded machine, the 1 s clock stops it first;
        # test_lcb_judging.py::test_an_endless_printer_is_stopped_by_the_output_cap checks the cap without a race
        ("print 1 GB in lines", ADD, "while True:\n    print('y' * 9999)", {"wrong answer", "time limit"}),
        ("flood the verdict channel", ADD, "import os\nwhile True:\n    for fd in range(3, 12):\n        try:\n"
                                           "            os.write(fd, b'{' * 65536)\n        except OSError:\n"
                                           "            pass", {"runtime error", "time limit"}),
        ("exit before printing", ADD, "import sys\nsys.exit(0)\n" + sum_, {"wrong answer"}),
        ("deep recursion", ADD, "import sys\nsys.setrecursionlimit(10**8)\ndef f(n):\n    return f(n + 1) + 1\n"
                                "f(0)", {"runtime error", "time limit"}),
        ("deep C recursion", ADD, "import sys\nfrom functools import lru_cache\nsys.setrecursionlimit(10**7)\n"
                                  "@lru_cache(None)\ndef f(n):\n    return 0 if n == 0 else f(n - 1) + 1\n"
                                  "print(f(10**7))", set(bad)),
        # it answers, but never finishes: a time limit (lcb_runner would keep the answer)
        ("thread that never ends", ADD, "import threading\ndef spin():\n    while True:\n        pass\n"
                                        "threading.Thread(target=spin).start()\n" + sum_, {"time limit"}),
        ("correct again", ADD, sum_, {"passed"}),
    ]


def test_hostile_programs(tmp_path):
    # 1. Prove the caps bind, for the limits the grader gets below, in every slot it will use.
    for slot in range(WORKERS):
        got = probe(Limits(memory_bytes=MEMORY_MB << 20, max_tasks=MAX_TASKS), slot, 2 << 30)
        if got["mapped"] or got["forks"] > MAX_TASKS - 1 or got["uid"] != UID_BASE + slot:
            pytest.fail(f"sandbox caps do not bind ({got}); not running the fork bomb or the 20 GB program")
    assert not _live_tasks(range(UID_BASE, UID_BASE + WORKERS))

    # 2. A file next to the grader that the programs can see but must not change.
    neighbour = Path(tempfile.mkdtemp(prefix="lcb-neighbour-"))
    try:
        os.chmod(neighbour, 0o755)
        sentinel = neighbour / "keep.txt"
        sentinel.write_text(KEEP)
        os.chmod(sentinel, 0o666 & ~0o022)
        escape = f"/tmp/lcb-escape-{os.getpid()}"
        cases = hostile_cases(sentinel, escape)
        gen = tmp_path / "gen"
        write_generations(gen / "samples.0.jsonl", [(prob, code) for _, prob, code, _ in cases])
        out = tmp_path / "verdicts.jsonl"
        before = set(Path(tempfile.gettempdir()).glob("litesys-sandbox-*"))
        env = dict(os.environ, LITESYS_TEST_SECRET=SECRET, LITESYS_NO_PROGRESS="1")
        start = time.monotonic()
        proc = subprocess.run([sys.executable, str(REPO / "grade_lcb.py"), "--output_dir", str(gen), "--output_file",
                               str(out), "--workers", str(WORKERS), "--timeout", "1", "--memory_mb", str(MEMORY_MB),
                               "--max_tasks", str(MAX_TASKS), "--sandbox_uid_base", str(UID_BASE)],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        elapsed = time.monotonic() - start

        # 3. The grader survived and finished in bounded time; every sample got the verdict it deserves.
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert elapsed < 150, f"grading took {elapsed:.0f}s"
        recs = {(r["line"], r["io"]): r for r in map(json.loads, out.read_text().splitlines()[1:])}
        assert len(recs) == 2 * len(cases)  # both I/O modes (the default)
        for i, (name, _, _, allowed) in enumerate(cases, 1):
            for io in ("lcb_runner", "script"):
                ok = allowed[io] if isinstance(allowed, dict) else allowed
                assert recs[i, io]["verdict"] in ok, (name, recs[i, io])
                assert recs[i, io]["elapsed_s"] < 60, (name, recs[i, io])

        # 4. No harm: the neighbour file, the temp dirs, leftover processes.
        assert sentinel.read_text() == KEEP
        assert not Path(escape).exists()
        assert not (set(Path(tempfile.gettempdir()).glob("litesys-sandbox-*")) - before)
        assert not _live_tasks(range(UID_BASE, UID_BASE + WORKERS + 4))
    finally:
        shutil.rmtree(neighbour, ignore_errors=True)
