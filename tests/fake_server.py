"""What the fake APIs of the tests share: an HTTP server on 127.0.0.1 served by a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self


class FakeServer(ThreadingHTTPServer):
    """Listens on a free port of 127.0.0.1; `start`/`stop`, or `with`; `wait_for` what its
    handlers record."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> Self:
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def _stop_serving(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None

    def stop(self) -> None:
        self._stop_serving()
        self.server_close()

    def wait_for(
        self, condition: Callable[[], Any], what: str, timeout: float = 20.0, every: float = 0.02
    ) -> Any:
        """Wait until `condition()` is truthy and return it; AssertionError naming `what`."""
        deadline = time.monotonic() + timeout
        while True:
            found = condition()
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(every)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
