"""A TCP server on loopback that accepts connections and never says a word."""

from __future__ import annotations

import socket
import threading
from types import TracebackType


class SilentServer:
    """Use as a context manager; `port` is where it listens while open."""

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self._accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="bench-silent", daemon=True)

    @property
    def port(self) -> int:
        return self._socket.getsockname()[1]

    def __enter__(self) -> SilentServer:
        self._socket.listen(16)
        self._socket.settimeout(0.2)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for connection in self._accepted:
            connection.close()
        self._socket.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except OSError:  # the 0.2 s timeout, so `stop` is checked often
                continue
            self._accepted.append(connection)
