"""The plant database's faults: PostgreSQL behind ``tests.tcp_proxy.TcpProxy``, which can refuse
(``cut``) and come back (``start``); this adds a stall (packets held, nothing refused: a
database that stops answering) when ``TcpProxy`` has none of its own."""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.tcp_proxy import TcpProxy


class FaultProxy(TcpProxy):
    """``refuse()`` / ``restore()`` / ``restart()`` / ``stall()`` / ``resume()``."""

    def __init__(self, target: tuple[str, int]) -> None:
        super().__init__(target)
        self._flowing = threading.Event()
        self._flowing.set()
        self.up = False

    def start(self) -> None:
        super().start()
        self.up = True

    def refuse(self) -> None:
        """Refuse new connections and break the open ones (the server went away)."""
        self.cut()
        self.up = False

    def restore(self) -> None:
        if not self.up:
            self.start()
        self.resume()

    def restart(self) -> None:
        """Break every open connection and accept new ones at once (a server restart)."""
        self.refuse()
        self.restore()

    def stall(self) -> None:
        """Hold every byte in both directions; connections stay open, new ones are accepted
        and stall too (a hung server, packets dropped)."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                self._flowing.wait()
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
