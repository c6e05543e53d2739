"""What /proc says about a thread: shared by the tests and by opener.py (a script run as a child,
which imports nothing of the tests' but this)."""

from __future__ import annotations


def asleep_in_syscall(tid: int | None, pid: int | str = "self") -> int | None:
    """The number of the syscall thread ``tid`` of process ``pid`` is asleep in (state S, from
    /proc/PID/task/TID/syscall and stat); None when it runs, is gone, or sleeps outside one."""
    try:
        with open(f"/proc/{pid}/task/{tid}/syscall") as f:
            current = f.read().split()
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None
    if not current or state != "S" or not current[0].lstrip("-").isdigit() or int(current[0]) < 0:
        return None
    return int(current[0])
