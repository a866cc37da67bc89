"""``gridmesh keys``: the API keys of the edge (create, list, revoke).

Works on the key table in MySQL directly, as the operator who runs the
mesh; a new key is printed once (only its digest is kept), a revoked key is
refused at the edge within ``auth.refresh_s``.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from gridmesh.cli.stats import parse_duration
from gridmesh.cli.tasks import table
from gridmesh.config import MeshConfig
from gridmesh.core.access import KeyRecord, Role
from gridmesh.edge.keys import KeyStore

__all__ = ["register"]


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S") if at is not None else "-"


def _state(record: KeyRecord, now: datetime) -> str:
    if record.revoked_at is not None:
        return "used" if record.role is Role.JOIN else "revoked"
    return "active" if record.usable(now) else "expired"


def _as_dict(record: KeyRecord, now: datetime) -> dict[str, object]:
    return {
        "key_id": record.key_id,
        "role": str(record.role),
        "name": record.name,
        "state": _state(record, now),
        "created_at": record.created_at.isoformat(),
        "expires_at": record.expires_at.isoformat() if record.expires_at else None,
        "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
        "note": record.note,
    }


def cmd_create(config: MeshConfig, args: argparse.Namespace) -> int:
    name = args.publisher or args.subscriber or ""
    expires = datetime.now(UTC) + parse_duration(args.expires, "--expires") if args.expires else None
    store = KeyStore.open(config)
    try:
        record, key = store.create(args.role, name, expires_at=expires, note=args.note)
    finally:
        store.close()
    if args.json:
        print(json.dumps({**_as_dict(record, datetime.now(UTC)), "key": key}))
    else:
        print(key)
        print(f"(key {record.key_id}, role {record.principal}; shown once: only its digest is kept)")
    return 0


def cmd_list(config: MeshConfig, args: argparse.Namespace) -> int:
    store = KeyStore.open(config)
    try:
        records = store.all()
    finally:
        store.close()
    now = datetime.now(UTC)
    if args.json:
        for record in records:
            print(json.dumps(_as_dict(record, now)))
        return 0
    rows = [
        (
            r.key_id,
            str(r.principal),
            _state(r, now),
            _when(r.created_at),
            _when(r.expires_at),
            r.note,
        )
        for r in records
    ]
    print(table(("key_id", "role", "state", "created", "expires", "note"), rows))
    return 0


def cmd_path(config: MeshConfig, args: argparse.Namespace) -> int:
    if args.ca:
        if config.edge_ca_file is None:
            print("gridmesh: the edge serves plaintext (envoy.plaintext): there is no CA to trust", file=sys.stderr)
            return 1
        print(config.edge_ca_file)
        return 0
    print(config.credentials_path)
    return 0


def cmd_revoke(config: MeshConfig, args: argparse.Namespace) -> int:
    store = KeyStore.open(config)
    try:
        record = store.revoke(args.key_id)
    finally:
        store.close()
    print(f"revoked key {record.key_id} ({record.principal}); the edge refuses it within {config.auth.refresh_s:g} s")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="API keys for the edge")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    p = keys_sub.add_parser("create", help="make a key (printed once)")
    p.add_argument(
        "--role", required=True, choices=["admin", "operator", "submitter", "viewer", "publisher", "subscriber"]
    )
    p.add_argument("--publisher", default="", metavar="NAME", help="the publisher a publisher key publishes as")
    p.add_argument("--subscriber", default="", metavar="NAME", help="the subscriber a subscriber key consumes as")
    p.add_argument(
        "--expires", default="", metavar="DURATION", help="valid this long (30m, 12h, 90d; default: no expiry)"
    )
    p.add_argument("--note", default="", help="what the key is for")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_create)
    p = keys_sub.add_parser("list", help="every key (never the secrets)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)
    p = keys_sub.add_parser("path", help="where the local admin's key is (the CLI's default credential)")
    p.add_argument("--ca", action="store_true", help="where the CA certificate the edge's clients trust is, instead")
    p.set_defaults(func=cmd_path)
    p = keys_sub.add_parser("revoke", help="refuse a key from now on")
    p.add_argument("key_id", metavar="ID", help="the key's id (gmk_<id>_…), as `keys list` shows it")
    p.set_defaults(func=cmd_revoke)
