"""A UDP proxy on loopback that drops a fraction of datagrams in each direction (for tests)."""

from __future__ import annotations

import random
import selectors
import socket
import threading
from typing import Any


class LossyProxy:
    """Forward UDP between clients and ``target``, dropping datagrams with probability ``loss``.

    Each client address gets its own upstream socket, so several connections
    can run through it. Runs in a daemon thread until :meth:`close`.
    """

    def __init__(self, target: tuple[str, int], loss: float, seed: int = 1) -> None:
        self.target = target
        self.loss = loss
        self.rng = random.Random(seed)
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.port: int = self.front.getsockname()[1]
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.front, selectors.EVENT_READ, None)
        self.upstream: dict[Any, socket.socket] = {}
        self.forwarded = self.dropped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="lossy-proxy")
        self._thread.start()

    def _drop(self) -> bool:
        if self.rng.random() < self.loss:
            self.dropped += 1
            return True
        self.forwarded += 1
        return False

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self.sel.select(0.1):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data, addr = sock.recvfrom(65536)
                except OSError:
                    continue
                if key.data is None:  # from a client
                    up = self.upstream.get(addr)
                    if up is None:
                        up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        up.connect(self.target)
                        self.upstream[addr] = up
                        self.sel.register(up, selectors.EVENT_READ, addr)
                    if not self._drop():
                        try:
                            up.send(data)
                        except OSError:
                            pass
                elif not self._drop():  # from the server, back to its client
                    try:
                        self.front.sendto(data, key.data)
                    except OSError:
                        pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for s in self.upstream.values():
            s.close()
        self.front.close()
        self.sel.close()
