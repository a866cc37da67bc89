"""A relay that stops dead between publishing and marking sent, for the
"outbox relay killed between publish and mark-sent" fault test.

    python -m tests.e2e.crashing_relay   (GRIDMESH_* environment of the mesh)

It relays CustomerService's outbox like the service's own relay, but after
its first PublishBatch was confirmed it prints ``published N`` and blocks
before marking anything sent, until the test kills it with SIGKILL.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections.abc import Sequence

from gridmesh.adapters.mysql import MySQL
from gridmesh.clients import EventClient, Outbox, OutboxRelay
from gridmesh.clients.outbox import MySQLOutboxStore
from gridmesh.config import load_config


class StopBeforeMarking(MySQLOutboxStore):
    def mark_sent(self, seqs: Sequence[int]) -> None:
        print(f"published {len(seqs)}", flush=True)
        threading.Event().wait()  # until SIGKILL


def main() -> None:
    config = load_config(os.environ)
    db = MySQL(config.mysql_login("demo_customers"), config.database("demo_customers"))
    outbox = Outbox(functools.partial(db.connect, db.database), publisher="customers")
    # Through the edge, as the demo's own relay (TLS, the local admin's key).
    key = config.credentials_path.read_text().strip()
    with EventClient(config.edge_address, api_key=key, ca_file=config.edge_ca_file) as events:
        relay = OutboxRelay(outbox, events, batch_size=int(sys.argv[1]), store=StopBeforeMarking(outbox))
        relay.run_once()


if __name__ == "__main__":
    main()
