"""The AMQP side: a proton handler that serves the SDK's links against a :class:`Namespace`.

Everything here runs on the reactor thread. State lives in the namespace (shared with the test
thread under its lock); this module only keeps the proton objects that state is reached through.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from proton import Condition, Connection, Delivery, Endpoint, Event, Link, Message, Receiver, Sender
from proton._reactor import Acceptor  # listen() returns it, but proton.reactor does not re-export it
from proton.handlers import MessagingHandler

from bench.harness.servicebus import addresses, codec, management, names, outcomes
from bench.harness.servicebus.addresses import Address, Node
from bench.harness.servicebus.store import Entity, Namespace

log = logging.getLogger(__name__)

TICK_SECONDS = 0.05  # how often lock expiry is checked and messages injected by the test are pushed
INCOMING_CREDIT = 100  # credit kept open on links the SDK sends on
STOP_GRACE_SECONDS = 1.0  # how long to wait for clients to answer our close before dropping them


class Broker(MessagingHandler):
    """Serves CBS, ``$management`` and queue links to Service Bus SDK clients."""

    def __init__(self, namespace: Namespace) -> None:
        super().__init__(prefetch=0, auto_accept=False, auto_settle=False, peer_close_is_error=False)
        self.acceptor: Acceptor | None = None
        self._namespace = namespace
        self._stop_requested = threading.Event()
        self._stop_deadline: float | None = None
        self._connections: set[Connection] = set()
        self._consumers: dict[Sender, Entity] = {}
        self._ingress: dict[Receiver, str] = {}
        self._requests: dict[Receiver, tuple[Address, str]] = {}
        self._replies: dict[tuple[Connection, str], Sender] = {}
        self._inflight: dict[Delivery, tuple[Entity, uuid.UUID]] = {}
        self._by_token: dict[uuid.UUID, Delivery] = {}
        # While set, receive-link settlements are held unanswered, as if the network were slow: a
        # client killed meanwhile never had its settlement applied (its lock just runs out).
        self.hold_outcomes = threading.Event()
        self._held: list[Delivery] = []

    def request_stop(self) -> None:
        """Ask the reactor to close everything and return; safe from any thread."""
        self._stop_requested.set()

    # -- reactor lifecycle -------------------------------------------------------------------

    def on_start(self, event: Event) -> None:
        event.container.schedule(TICK_SECONDS, self)

    def on_timer_task(self, event: Event) -> None:
        """Expire locks, push waiting messages, and carry out a requested stop."""
        if self._stop_requested.is_set() and self._stopping():
            event.container.stop()
            return
        if self._held and not self.hold_outcomes.is_set():
            held, self._held = self._held, []
            for delivery in held:
                if delivery.link.connection in self._connections:
                    self._on_outcome(delivery)
        now = time.time()
        for entity in self._namespace.entities():
            entity.expire_locks(now)
        self._pump()
        event.container.schedule(TICK_SECONDS, self)

    def _stopping(self) -> bool:
        """Close the listener and connections once; True when it is time to leave the loop."""
        if self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + STOP_GRACE_SECONDS
            if self.acceptor is not None:
                self.acceptor.close()
            for connection in list(self._connections):
                connection.close()
        return not self._connections or time.monotonic() > self._stop_deadline

    # -- connections -------------------------------------------------------------------------

    def on_connection_bound(self, event: Event) -> None:
        """The SDK opens with SASL; it offers ANONYMOUS and then authenticates over $cbs."""
        event.transport.sasl().allowed_mechs(names.SASL_MECHANISMS)

    def on_connection_opening(self, event: Event) -> None:
        self._connections.add(event.connection)

    def on_transport_closed(self, event: Event) -> None:
        """A client went away (closed, or killed): forget its links; its locks run out on their own."""
        connection = event.connection
        self._connections.discard(connection)
        self._held = [d for d in self._held if d.link.connection != connection]
        for link in [*self._consumers, *self._ingress, *self._requests, *self._replies.values()]:
            if link.connection == connection:
                self._forget(link)

    def on_transport_error(self, event: Event) -> None:
        """Clients dropping the socket is routine in tests (SIGKILL), so not worth an error log."""
        log.debug("transport error: %s", event.transport.condition)

    def on_link_error(self, event: Event) -> None:
        """A link closed with an error: proton's default would drop the whole connection; only forget it."""
        log.debug("link error: %s", event.link.remote_condition)
        self._forget(event.link)

    def on_connection_error(self, event: Event) -> None:
        log.debug("connection error: %s", event.connection.remote_condition)

    def on_session_error(self, event: Event) -> None:
        event.session.close()

    # -- links -------------------------------------------------------------------------------

    def on_link_remote_open(self, event: Event) -> None:
        """Attach the link to what its address names (runs before proton's auto-open)."""
        link = event.link
        if not link.state & Endpoint.LOCAL_UNINIT:
            return
        raw = (link.remote_target.address if link.is_receiver else link.remote_source.address) or ""
        address = addresses.parse(raw)
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        link.snd_settle_mode = link.remote_snd_settle_mode
        link.rcv_settle_mode = link.remote_rcv_settle_mode
        link.open()
        if address is None or (link.is_receiver and address.node is Node.ENTITY and address.dead_letter):
            link.condition = Condition("amqp:not-found", f"no such node: {raw}")
            link.close()
            return
        if link.is_receiver:
            self._open_incoming(link, address, raw)
        else:
            self._open_outgoing(link, address, raw)
        self._pump()

    def _open_incoming(self, link: Receiver, address: Address, raw: str) -> None:
        if address.node is Node.ENTITY:
            assert address.queue is not None
            self._ingress[link] = self._namespace.queue(address.queue).name
        else:
            self._requests[link] = (address, raw)
        link.flow(INCOMING_CREDIT)

    def _open_outgoing(self, link: Sender, address: Address, raw: str) -> None:
        if address.node is Node.ENTITY:
            self._consumers[link] = self._entity(address)
        else:
            self._replies[(link.connection, raw)] = link

    def on_link_closing(self, event: Event) -> None:
        self._forget(event.link)  # proton's endpoint handler answers the close

    def on_link_remote_detach(self, event: Event) -> None:
        self._forget(event.link)
        event.link.detach()

    def on_link_flow(self, event: Event) -> None:
        self._pump()

    # -- deliveries --------------------------------------------------------------------------

    def on_delivery(self, event: Event) -> None:
        delivery = event.delivery
        if delivery.link.is_receiver:
            self._on_incoming(delivery)
        elif delivery.updated:
            self._on_outcome(delivery)
        self._pump()

    def _on_incoming(self, delivery: Delivery) -> None:
        """A complete message from the SDK: enqueue it (splitting batches) or answer a request."""
        link = delivery.link
        if delivery.aborted:
            delivery.settle()
            return
        if not delivery.readable or delivery.partial:
            return
        raw = bytes(link.recv(delivery.pending) or b"")
        link.advance()
        if link in self._ingress:
            queue = self._namespace.queue(self._ingress[link])
            for encoded in codec.split_transfer(raw):
                queue.enqueue(encoded, codec.message_id_of(encoded), time.time())
        elif link in self._requests:
            self._answer(link, raw)
        delivery.update(Delivery.ACCEPTED)
        delivery.settle()
        link.flow(max(0, INCOMING_CREDIT - link.credit))

    def _on_outcome(self, delivery: Delivery) -> None:
        """The SDK settled (or asked to settle) a message we delivered."""
        state = delivery.remote_state
        if state not in outcomes.TERMINAL:
            return
        if self.hold_outcomes.is_set() and delivery in self._inflight:
            self._held.append(delivery)
            return
        held = self._inflight.pop(delivery, None)
        if held is None and delivery.settled:
            delivery.settle()  # a settled outcome for a message already settled over $management
            return
        if held is None:
            echo = outcomes.lock_lost()
        else:
            entity, token = held
            self._by_token.pop(token, None)
            echo = outcomes.apply(entity, token, state, delivery.remote)
        log.debug("receive-link outcome %s on %s -> echo %s", state, held and held[0].path, echo)
        if echo.condition is not None:
            delivery.local.condition = echo.condition
        delivery.update(echo.state)
        delivery.settle()

    def _answer(self, link: Receiver, raw: bytes) -> None:
        """Run a CBS or $management request and send the reply on the client's paired link."""
        request = Message()
        request.decode(raw)
        address, node = self._requests[link]
        log.debug("request on %s: %s", node, (request.properties or {}).get(names.MGMT_OPERATION_KEY))
        if address.node is Node.CBS:
            reply = management.cbs_reply(request)
        else:
            outcome = management.handle(self._entity(address), request)
            for token in outcome.settled:
                self._close_delivery(token)
            reply = outcome.reply
        sender = self._replies.get((link.connection, node))
        if sender is None:
            log.warning("no reply link for %s; dropping the reply", node)
            return
        delivery = sender.delivery(uuid.uuid4().bytes)  # tags are bytes on the wire; proton accepts them
        sender.stream(bytes(reply.encode()))
        sender.advance()
        delivery.settle()

    def _close_delivery(self, token: uuid.UUID) -> None:
        """Forget our delivery of a message the SDK settled over $management instead.

        No disposition is sent for it: pyamqp matches incoming dispositions by delivery id without
        looking at the role, so one sent while the management request is pending settles the
        SDK's *request* instead and the request fails.
        """
        delivery = self._by_token.pop(token, None)
        if delivery is not None:
            self._inflight.pop(delivery, None)

    # -- pushing messages --------------------------------------------------------------------

    def _pump(self) -> None:
        """Deliver waiting messages to every consumer link that has credit."""
        now = time.time()
        for link, entity in list(self._consumers.items()):
            if not _is_open(link):
                continue
            while link.credit > 0:
                lock = entity.take(now)
                if lock is None:
                    break
                delivery = link.delivery(lock.token.bytes_le)  # the SDK reads the lock token from the tag
                link.stream(codec.outgoing(lock.message, lock))
                link.advance()
                if link.snd_settle_mode == Link.SND_SETTLED:  # RECEIVE_AND_DELETE: gone once sent
                    delivery.settle()
                    entity.complete(lock.token)
                else:
                    self._inflight[delivery] = (entity, lock.token)
                    self._by_token[lock.token] = delivery
            if link.drain_mode and link.credit > 0:
                link.drained()

    # -- bookkeeping -------------------------------------------------------------------------

    def _entity(self, address: Address) -> Entity:
        assert address.queue is not None
        queue = self._namespace.queue(address.queue)
        return queue.dead_letter if address.dead_letter else queue.main

    def _forget(self, link: Link) -> None:
        """Drop a gone link from the books; messages it held stay locked until their locks expire."""
        self._consumers.pop(link, None)
        self._ingress.pop(link, None)
        self._requests.pop(link, None)
        for key in [key for key, sender in self._replies.items() if sender == link]:
            del self._replies[key]
        for delivery in [d for d in self._inflight if d.link == link]:
            _, token = self._inflight.pop(delivery)
            self._by_token.pop(token, None)


def _is_open(link: Link) -> bool:
    return bool(link.state & Endpoint.LOCAL_ACTIVE and link.state & Endpoint.REMOTE_ACTIVE)
