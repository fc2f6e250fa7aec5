"""A local Azure Service Bus-compatible AMQP 1.0 endpoint that the real ``azure-servicebus`` SDK talks to.

Start it with ``LocalServiceBus()`` (in a thread) or ``python -m bench.harness.servicebus``
(as a process); see ``bus.py`` for the Python API tests use to inject and inspect messages.
"""

from bench.harness.servicebus.bus import LocalServiceBus
from bench.harness.servicebus.codec import MessageInfo
from bench.harness.servicebus.store import QueueSettings

__all__ = ["LocalServiceBus", "MessageInfo", "QueueSettings"]
