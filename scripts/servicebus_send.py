"""Send one task message to a Service Bus queue and, with --reply-to, print the reply (no Docker needed).

The connection string comes from RELAY_SERVICEBUS_CONNECTION_STRING, as the bridge's does (secrets only
from the environment). Works against Azure, Microsoft's emulator, or the test suite's local endpoint:

    .venv/bin/python -m bench.harness.servicebus      # prints READY <connection string>
    RELAY_SERVICEBUS_CONNECTION_STRING='<it>' .venv/bin/python scripts/servicebus_send.py tasks \\
        '{"task": "echo", "kwargs": {"message": "hello"}}' --reply-to replies
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid

from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient

VARIABLE = "RELAY_SERVICEBUS_CONNECTION_STRING"


async def send(connection_string: str, args: argparse.Namespace) -> int:
    message = ServiceBusMessage(args.body, message_id=args.message_id, reply_to=args.reply_to)
    async with ServiceBusClient.from_connection_string(connection_string) as client:
        async with client.get_queue_sender(args.queue) as sender:
            await sender.send_messages(message)
        print(f"sent message {args.message_id} to {args.queue} (the task id is the message id)", flush=True)
        if not args.reply_to:
            return 0
        async with client.get_queue_receiver(args.reply_to, max_wait_time=args.wait) as receiver:
            async for reply in receiver:
                if reply.correlation_id != args.message_id:
                    continue  # someone else's reply: leave it for them (its lock expires)
                await receiver.complete_message(reply)
                print(f"reply on {args.reply_to}: {b''.join(reply.body).decode()}", flush=True)
                return 0
    print(f"no reply on {args.reply_to} within {args.wait:g} s", file=sys.stderr)
    return 1


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="scripts/servicebus_send.py", description=__doc__.split("\n\n")[0], epilog=f"Needs {VARIABLE}."
    )
    parser.add_argument("queue", help="the queue the bridge reads (RELAY_SERVICEBUS_QUEUE)")
    parser.add_argument("body", help='the message body, e.g. \'{"task": "echo"}\'')
    parser.add_argument("--message-id", default=f"sb-{uuid.uuid4().hex[:12]}", help="message id (= task id)")
    parser.add_argument("--reply-to", default=None, help="queue to ask the reply on; then wait for it")
    parser.add_argument("--wait", type=float, default=30, help="seconds to wait for the reply (default 30)")
    args = parser.parse_args()
    connection_string = os.environ.get(VARIABLE, "")
    if not connection_string:
        parser.error(f"set {VARIABLE} (the local endpoint prints one: .venv/bin/python -m bench.harness.servicebus)")
    sys.exit(asyncio.run(send(connection_string, args)))


if __name__ == "__main__":
    main()
