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

Protocol: the worker and its warm parent share a SOCK_SEQPACKET pair (one message per
request, never interleaved). A run is a JSON message with three descriptors: stdout's and
stderr's write ends and one end of a socket pair on which the parent answers `{"pid": …}`
when it has forked (or `{"error": …}` when it could not) and `{"exit": …}` when the child has
ended. The child waits for the parent's go, given only once the pid is on its way, so a worker
that hears no pid knows that nothing ran. `{"kill": pid}` kills a run's process group, by the
parent, which has not reaped it yet (so the number cannot belong to another process).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import gc
import json
import os
import runpy
import selectors
import signal
import socket
import sys
import threading
from typing import NoReturn

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
    """SIGKILL this process when `parent` dies (Linux), and end now if it already has."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def _child(request: dict, out_fd: int, err_fd: int, go_fd: int, parent: int) -> NoReturn:
    """In the forked child: wait for the parent's go, become the command's process and run
    alembic; end with its exit status (a traceback printed as the interpreter prints it)."""
    os.setsid()
    _die_with(parent)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    for fd in {devnull, out_fd, err_fd}:
        os.close(fd)
    go = os.read(go_fd, 1)
    os.close(go_fd)
    if not go:  # the parent died before the worker heard of this process
        os._exit(1)
    try:
        os.chdir(request["cwd"])
    except OSError as exc:
        print(f"Could not start alembic in {request['cwd']!r}: {exc.strerror}.", file=sys.stderr)
        os._exit(1)
    os.environ.clear()
    os.environ.update(request["env"])
    sys.path.insert(0, os.getcwd())  # what `python -m` puts first
    sys.argv = ["alembic", *request["args"]]
    try:
        runpy.run_module("alembic", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:  # as the interpreter reads it
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    _end(code)


def _end(code: int) -> NoReturn:
    """End as the interpreter would — other threads joined, atexit handlers run (logging's
    among them), output flushed — but without tearing its modules down: that would touch
    (and so copy) every page it shares with the warm parent."""
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code & 0xFF)  # as a shell sees it: sys.exit(-1) is 255


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
            if key.fileobj is not control:
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake_read, 512):
                        pass
                _reap(runs)
                continue
            message, fds, _flags, _address = socket.recv_fds(control, MESSAGE_MAX, 3)
            if not message:
                return  # the worker is gone
            request = json.loads(message)
            if "kill" in request:
                if request["kill"] in runs:  # not reaped: the number is still that run's
                    with contextlib.suppress(OSError):
                        os.killpg(request["kill"], signal.SIGKILL)
                continue
            out_fd, err_fd, answer_fd = fds
            answer = socket.socket(fileno=answer_fd)
            go_read, go_write = os.pipe()
            try:
                pid = os.fork()
            except OSError as exc:
                _send(answer, {"error": exc.strerror or str(exc)})
                for fd in {out_fd, err_fd, go_read, go_write}:
                    os.close(fd)
                answer.close()
                continue
            if pid == 0:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                selector.close()
                for fd in (wake_read, wake_write, go_write):
                    os.close(fd)
                for sock in (control, answer, *runs.values()):
                    os.close(sock.detach())  # detached: nothing closes the number again later
                _child(request, out_fd, err_fd, go_read, me)
            for fd in {out_fd, err_fd, go_read}:
                os.close(fd)
            runs[pid] = answer
            _send(answer, {"pid": pid})
            os.write(go_write, b"g")
            os.close(go_write)


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
    gc.freeze()  # what the children inherit stays shared: their collector never touches it
    serve(socket.socket(fileno=int(sys.argv[1])))
