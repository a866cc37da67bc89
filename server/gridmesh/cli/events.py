"""``gridmesh events subscribe|unsubscribe|publish|list|stats|dlq``: the
EventManager from the command line, through the edge (SPEC §4).

Each command is one call of :class:`~gridmesh.clients.EventClient`; text
output by default, one JSON object per line with ``--json``. A refused call
prints ``gridmesh: <CODE>: <message>`` and exits 2 for a request that is
wrong as given (``INVALID_ARGUMENT``), else 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from gridmesh.cli import mesh, tasks
from gridmesh.clients.events import EventClient, EventError, new_event, payload_dict
from gridmesh.config import MeshConfig
from gridmesh.v1 import common_pb2, eventmanager_pb2

Handler = Callable[[EventClient, argparse.Namespace], None]


def _client(config: MeshConfig) -> EventClient:
    return mesh.event_client(config)


def _command(handler: Handler) -> Callable[[MeshConfig, argparse.Namespace], int]:
    def run(config: MeshConfig, args: argparse.Namespace) -> int:
        try:
            with _client(config) as client:
                handler(client, args)
        except EventError as e:
            print(f"gridmesh: {e.code_name}: {e.message}", file=sys.stderr)
            return 2 if e.code_name == "INVALID_ARGUMENT" else 1
        return 0

    return run


def _subscription_line(s: eventmanager_pb2.Subscription) -> str:
    return f"{s.subscriber:<20} <- {s.publisher + '/' + s.entity_type:<30} queue {s.queue}"


def _event_line(e: common_pb2.EntityEvent) -> str:
    op = common_pb2.Operation.Name(e.operation)
    payload = json.dumps(payload_dict(e), separators=(",", ":"), sort_keys=True)
    return f"{e.event_id}  {e.publisher}/{e.entity_type}/{e.entity_id} {op} v{e.version}  {payload}"


def _subscribe(client: EventClient, args: argparse.Namespace) -> None:
    s = client.subscribe(args.subscriber, args.publisher, args.entity_type, snapshot=args.snapshot)
    print(tasks.json_line(s) if args.json else f"subscribed: {_subscription_line(s)}")


def _unsubscribe(client: EventClient, args: argparse.Namespace) -> None:
    client.unsubscribe(args.subscriber, args.publisher, args.entity_type)
    if not args.json:
        print(f"unsubscribed: {args.subscriber} <- {args.publisher}/{args.entity_type} (its queue stays)")


def _publish(client: EventClient, args: argparse.Namespace) -> None:
    payload = _payload(args.payload)
    try:
        event = new_event(
            args.publisher,
            args.entity_type,
            args.entity_id,
            args.operation,
            args.version,
            payload,
            event_id=args.event_id or None,
        )
    except ValueError as e:
        raise EventError("INVALID_ARGUMENT", str(e)) from None
    answer = client.publish(event)
    if args.json:
        print(tasks.json_line(answer))
    else:
        routed = ", ".join(answer.routed_to) or "nobody (no subscriber)"
        print(f"published {answer.event_id} (confirmed durable), routed to {routed}")


def _payload(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise EventError("INVALID_ARGUMENT", f"--payload is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise EventError("INVALID_ARGUMENT", "--payload must be a JSON object (the whole entity)")
    return value


def _list(client: EventClient, args: argparse.Namespace) -> None:
    found = client.list(publisher=args.publisher, subscriber=args.subscriber)
    for s in found:
        print(tasks.json_line(s) if args.json else _subscription_line(s))
    if not found and not args.json:
        print("no subscriptions")


def _stats(client: EventClient, args: argparse.Namespace) -> None:
    stats = client.queue_stats(args.subscriber)
    if args.json:
        print(tasks.json_line(stats))
    else:
        print(
            f"{stats.queue}: {stats.messages} ready, {stats.consumers} consumer(s), {stats.dead_letters} dead letter(s)"
        )


def _dlq(client: EventClient, args: argparse.Namespace) -> None:
    dead = client.dead_letters(args.subscriber, args.max)
    for event in dead:
        print(tasks.json_line(event) if args.json else _event_line(event))
    if not dead and not args.json:
        print(f"the dead-letter queue of {args.subscriber} is empty")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``gridmesh events …`` to the command line's subcommands."""
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="one JSON object per line (proto field names)")
    key = argparse.ArgumentParser(add_help=False)
    key.add_argument("subscriber", help="the service that replicates (its queue: gridmesh.replica.SUBSCRIBER)")
    key.add_argument("publisher", help="the service whose entities it replicates")
    key.add_argument("entity_type", metavar="ENTITY_TYPE", help="the entity type, e.g. customer")

    events = subparsers.add_parser(
        "events",
        help="subscriptions, publishing and dead letters of the EventManager",
        description="The publisher->subscriber map, publishing events and inspecting subscribers' queues.",
    )
    sub = events.add_subparsers(dest="events_command", required=True, metavar="ACTION")

    p = sub.add_parser("subscribe", parents=[key, as_json], help="route a publisher's entity type to a subscriber")
    p.add_argument("--snapshot", action="store_true", help="first deliver the current state of every entity")
    p.set_defaults(func=_command(_subscribe))

    p = sub.add_parser("unsubscribe", parents=[key, as_json], help="stop routing (the queue stays)")
    p.set_defaults(func=_command(_unsubscribe))

    p = sub.add_parser(
        "publish",
        parents=[as_json],
        help="publish one entity event",
        description="Publish one event; answers once RabbitMQ confirmed it, with the subscribers it went to.",
    )
    p.add_argument("publisher")
    p.add_argument("entity_type", metavar="ENTITY_TYPE")
    p.add_argument("entity_id", metavar="ENTITY_ID")
    p.add_argument("--operation", type=str.upper, choices=["CREATE", "UPDATE", "DELETE"], required=True)
    p.add_argument("--version", type=int, required=True, help="the entity's version after the change (>= 1)")
    p.add_argument("--payload", default="{}", metavar="JSON", help="the whole entity after the change (not for DELETE)")
    p.add_argument("--event-id", default="", metavar="UUID", help="default: a new UUID")
    p.set_defaults(func=_command(_publish))

    p = sub.add_parser("list", parents=[as_json], help="list subscriptions")
    p.add_argument("--publisher", default="", help="only this publisher's")
    p.add_argument("--subscriber", default="", help="only this subscriber's")
    p.set_defaults(func=_command(_list))

    p = sub.add_parser("stats", parents=[as_json], help="depth, consumers and dead letters of a subscriber's queue")
    p.add_argument("subscriber")
    p.set_defaults(func=_command(_stats))

    p = sub.add_parser("dlq", parents=[as_json], help="show a subscriber's dead-lettered events (left in place)")
    p.add_argument("subscriber")
    p.add_argument("--max", type=int, default=0, metavar="N", help="at most N events (default 100)")
    p.set_defaults(func=_command(_dlq))


__all__ = ["register"]
