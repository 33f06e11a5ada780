"""alembic started warm: a fresh process per run, forked from a parent that already imported
alembic, SQLAlchemy and the drivers, instead of a new interpreter that imports them again.

`python -m alembic upgrade head` on a small database spends most of its half second starting
Python and importing SQLAlchemy; the migration itself takes a few milliseconds. A rollout runs
that command once per target, so a worker keeps one *warm parent* (this file, run as a program
with nothing of Retort's imported: not Django, not a revision file) and asks it for each run.
The parent forks; the child is a process like the one the command would have started:

- its own session (a timeout kills its whole group), killed when the warm parent dies, which
  is killed when its worker dies (`setpriv --pdeathsig`), so a killed worker leaves nothing
  running, as with a cold start;
- the run's environment, working directory and arguments; `sys.path[0]` is the working
  directory as `python -m` makes it; stdout and stderr are the caller's pipes;
- alembic's own entry point (`runpy` of `alembic.__main__`), so its exit status, output and
  errors are those of the command.

Revision files and env.py are imported only in that child, never in the warm parent, so no
state of one run reaches the next. The warm path is taken only for the command that would run
this very interpreter with `-m alembic` and the same PYTHONPATH; anything else (a wrapper
script, another virtualenv) starts cold through `core/processes.py`.

Protocol: the worker and its warm parent share a SOCK_SEQPACKET pair (one message per run,
never interleaved). A run is a JSON message with three descriptors: stdout's and stderr's
write ends and one end of a socket pair on which the parent answers `{"pid": …}` when it has
forked and `{"exit": …}` when the child has ended.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import runpy
import selectors
import signal
import socket
import sys
import traceback

# --- the warm parent (run as a program) -------------------------------------------------------

PRELOAD = (
    "logging.config",
    "alembic.config",
    "alembic.command",
    "alembic.op",
    "alembic.context",
    "sqlalchemy",
    "sqlalchemy.dialects.postgresql",
    "sqlalchemy.dialects.sqlite",
    "psycopg2",
)
PR_SET_PDEATHSIG = 1
MESSAGE_MAX = 1 << 20


def _preload() -> None:
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            __import__(name)


def _die_with(parent: int) -> None:
    """SIGKILL this process when `parent` dies (Linux; elsewhere nothing)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the request took hold
        os._exit(1)


def _child(request: dict, out_fd: int, err_fd: int, parent: int) -> None:
    """In the forked child: become the command's process, run alembic, exit with its status."""
    code: int = 1
    try:
        os.setsid()
        _die_with(parent)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        for fd in {devnull, out_fd, err_fd}:
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.path[0] = os.getcwd()
        sys.argv = ["alembic", *request["args"]]
        try:
            runpy.run_module("alembic", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:
            traceback.print_exc()
            code = 1
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code & 0xFF)  # as the shell sees it: sys.exit(-1) is 255


def serve(control: socket.socket) -> None:
    """Fork a child per request until the worker closes its end."""
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    runs: dict[int, socket.socket] = {}
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    me = os.getpid()
    while True:
        for key, _ in selector.select():
            if key.fileobj is control:
                message, fds, _flags, _address = socket.recv_fds(control, MESSAGE_MAX, 3)
                if not message:
                    return  # the worker is gone
                out_fd, err_fd, answer_fd = fds
                answer = socket.socket(fileno=answer_fd)
                pid = os.fork()
                if pid == 0:
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    selector.close()
                    for fd in (wake_read, wake_write, control.fileno(), answer_fd):
                        with contextlib.suppress(OSError):
                            os.close(fd)
                    for other in runs.values():
                        with contextlib.suppress(OSError):
                            os.close(other.fileno())
                    _child(json.loads(message), out_fd, err_fd, me)
                for fd in {out_fd, err_fd}:
                    os.close(fd)
                _send(answer, {"pid": pid})
                runs[pid] = answer
            else:
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake_read, 512):
                        pass
                _reap(runs)


def _reap(runs: dict[int, socket.socket]) -> None:
    while runs:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        answer = runs.pop(pid, None)
        if answer is not None:
            _send(answer, {"exit": os.waitstatus_to_exitcode(status)})
            answer.close()


def _send(answer: socket.socket, reply: dict) -> None:
    with contextlib.suppress(OSError):  # the worker stopped listening: nothing to tell
        answer.sendall(json.dumps(reply).encode() + b"\n")


if __name__ == "__main__":
    _preload()
    serve(socket.socket(fileno=int(sys.argv[1])))
