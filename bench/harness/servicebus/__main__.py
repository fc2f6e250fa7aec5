"""Run the endpoint as its own process, so a test can kill its clients while the broker keeps state.

``python -m bench.harness.servicebus --port N`` prints one ``READY <connection string>`` line
once it accepts connections, then serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType

from bench.harness.servicebus.bus import LocalServiceBus

READY_PREFIX = "READY "


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.harness.servicebus", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--max-delivery-count", type=int, default=10)
    parser.add_argument("--lock-duration", type=float, default=60.0, help="seconds")
    args = parser.parse_args(argv)

    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    bus = LocalServiceBus(
        host=args.host, port=args.port, max_delivery_count=args.max_delivery_count, lock_duration=args.lock_duration
    )
    with bus:
        print(READY_PREFIX + bus.connection_string, flush=True)
        while not done.wait(0.5):
            if not bus.running:
                raise SystemExit("LocalServiceBus reactor stopped unexpectedly")


if __name__ == "__main__":
    main()
