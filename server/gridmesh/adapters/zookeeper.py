"""ZooKeeper adapter (kazoo). The only module that imports kazoo.

kazoo runs its own threads; callbacks it makes (watches, state changes,
election) run on those threads, never on the event loop: callers that need
the loop hand results over with ``loop.call_soon_threadsafe``. kazoo's
exceptions stop here and become gridmesh errors.

Every znode made here carries a digest ACL: only the mesh's identity
(``zookeeper.user`` and its password) reads or changes it.

kazoo queues a request made while the connection is down until it comes
back; every request here waits at most ``request_timeout_s`` and then
raises :class:`Unavailable`, so a caller gets an answer while ZooKeeper is
down instead of hanging.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import KazooException, NodeExistsError, NoNodeError, NotEmptyError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.interfaces import IAsyncResult
from kazoo.recipe.cache import TreeCache, TreeEvent
from kazoo.recipe.election import Election
from kazoo.recipe.watchers import ChildrenWatch, DataWatch
from kazoo.security import make_digest_acl

from gridmesh.common.errors import NotFound, Unavailable
from gridmesh.config import ZooKeeperConfig

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0


def suspension_allowance(session_timeout_s: float) -> float:
    """How long a suspended connection may last before its session must count
    as lost, so that whoever acts on the session (a leader) stops before
    ZooKeeper could let another take over.

    kazoo pings after a third of a session timeout of silence and drops the
    connection when that ping is unanswered a third later: it says SUSPENDED
    at most two thirds of a session timeout after ZooKeeper last heard from
    it, and ZooKeeper expires the session a whole timeout after that. What
    is left is a third; a tenth of the timeout of it is kept as a margin for
    the step-down itself.
    """
    return session_timeout_s * (1 / 3 - 1 / 10)


def client(config: ZooKeeperConfig, password: str) -> KazooClient:
    """A kazoo client (not started) that signs in as the mesh's digest
    identity and gives what it creates that identity's ACL alone."""
    return KazooClient(
        hosts=config.hosts,
        timeout=config.session_timeout_s,
        auth_data=[("digest", f"{config.user}:{password}")],
        default_acl=[make_digest_acl(config.user, password, all=True)],
    )


class ZooKeeper:
    """A kazoo session rooted at ``root`` (e.g. ``/<namespace>/gridmesh``);
    every path below is relative to it."""

    def __init__(self, config: ZooKeeperConfig, root: str, password: str) -> None:
        self._config = config
        self.root = root.rstrip("/")
        self._client = client(config, password)
        self._ephemerals: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._suspension: threading.Timer | None = None
        self._suspension_lock = threading.Lock()  # held for moments only: kazoo calls our listener
        self._client.add_listener(self._on_state)
        self.on_session_lost: list[Callable[[], None]] = []
        """Called (on a kazoo thread) when the session expired: every
        ephemeral node and leadership of this session is gone. Also called
        when the connection stayed suspended for :func:`suspension_allowance`:
        kazoo only says LOST once it reconnects, but by then ZooKeeper may
        have expired the session and elected another leader, and a leader
        must have stopped before that (Curator's leader latch stops at once
        on SUSPENDED; this rides out a quick reconnection to another server
        of the ensemble)."""

    def _wait(self, request: IAsyncResult) -> Any:
        """The result of a kazoo request, or Unavailable after the request timeout."""
        try:
            return request.get(timeout=self._config.request_timeout_s)
        except KazooTimeoutError:
            raise Unavailable(
                f"ZooKeeper at {self._config.hosts} did not answer within {self._config.request_timeout_s:g} s"
            ) from None

    def path(self, relative: str) -> str:
        return f"{self.root}/{relative.strip('/')}" if relative.strip("/") else self.root

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        try:
            self._client.start(timeout=timeout)
        except (KazooTimeoutError, KazooException) as e:
            self._client.stop()
            raise Unavailable(f"ZooKeeper at {self._config.hosts} is unreachable: {e}") from None
        try:
            self._wait(self._client.ensure_path_async(self.root))
        except KazooException as e:
            raise Unavailable(f"ZooKeeper: cannot create {self.root}: {e}") from None

    def stop(self) -> None:
        """Close the session (its ephemeral nodes vanish at once). Idempotent."""
        self._end_suspension()
        try:
            self._client.stop()
            self._client.close()
        except KazooException:
            log.warning("ZooKeeper did not close cleanly", exc_info=True)

    # -- state ------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """The session is connected (not suspended, not lost)."""
        return bool(self._client.connected)

    def add_connection_listener(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(connected)`` (on a kazoo thread) whenever the
        session connects, is suspended or is lost."""

        def listener(state: str) -> None:
            callback(state == KazooState.CONNECTED)

        self._client.add_listener(listener)

    def _on_state(self, state: str) -> None:
        if state == KazooState.LOST:
            self._end_suspension()
            log.warning("ZooKeeper session lost")
            self._session_lost()
        elif state == KazooState.SUSPENDED:
            log.warning("ZooKeeper connection suspended")
            with self._suspension_lock:
                if self._suspension is None:
                    allowance = suspension_allowance(self._config.session_timeout_s)
                    self._suspension = threading.Timer(allowance, self._suspended_too_long)
                    self._suspension.daemon = True
                    self._suspension.start()
        elif state == KazooState.CONNECTED:
            self._end_suspension()
            if self._ephemerals:
                # After a lost session our ephemeral nodes are gone: put them back.
                threading.Thread(target=self._restore_ephemerals, daemon=True).start()

    def _end_suspension(self) -> None:
        with self._suspension_lock:
            if self._suspension is not None:
                self._suspension.cancel()
                self._suspension = None

    def _suspended_too_long(self) -> None:
        with self._suspension_lock:
            self._suspension = None
        if self._client.connected:
            return
        log.warning(
            "ZooKeeper unreachable for %.1f s of a %g s session: the session counts as lost",
            suspension_allowance(self._config.session_timeout_s),
            self._config.session_timeout_s,
        )
        self._session_lost()

    def _session_lost(self) -> None:
        for callback in self.on_session_lost:
            callback()

    def _restore_ephemerals(self) -> None:
        with self._lock:
            items = list(self._ephemerals.items())
        for path, data in items:
            try:
                self._client.create(path, data, ephemeral=True, makepath=True)
                log.info("re-created ephemeral node %s", path)
            except NodeExistsError:
                pass
            except KazooException:
                log.warning("could not re-create ephemeral node %s", path, exc_info=True)

    # -- nodes ------------------------------------------------------------

    def register_ephemeral(self, relative: str, data: bytes) -> str:
        """Create an ephemeral node (re-created after a session loss)."""
        path = self.path(relative)
        try:
            with contextlib.suppress(NoNodeError):
                self._wait(self._client.delete_async(path))  # a leftover of our previous session
            self._wait(self._client.create_async(path, data, ephemeral=True, makepath=True))
        except KazooException as e:
            raise Unavailable(f"ZooKeeper: cannot create {path}: {e}") from None
        with self._lock:
            self._ephemerals[path] = data
        return path

    def unregister_ephemeral(self, relative: str) -> None:
        path = self.path(relative)
        with self._lock:
            self._ephemerals.pop(path, None)
        try:
            self._wait(self._client.delete_async(path))
        except NoNodeError:
            pass
        except KazooException as e:
            raise Unavailable(f"ZooKeeper: cannot delete {path}: {e}") from None

    def ensure(self, relative: str, data: bytes = b"") -> None:
        """Create a persistent node (and its parents) if missing."""
        path = self.path(relative)
        try:
            self._wait(self._client.create_async(path, data, makepath=True))
        except NodeExistsError:
            pass
        except KazooException as e:
            raise Unavailable(f"ZooKeeper: cannot create {path}: {e}") from None

    def delete(self, relative: str, *, prune_empty_parents_up_to: str | None = None) -> None:
        """Delete a node; NotFound if it does not exist. Optionally remove the
        parents it leaves empty, up to (not including) the given ancestor."""
        path = self.path(relative)
        try:
            self._wait(self._client.delete_async(path))
        except NoNodeError:
            raise NotFound(f"{path} does not exist") from None
        except KazooException as e:
            raise Unavailable(f"ZooKeeper: cannot delete {path}: {e}") from None
        if prune_empty_parents_up_to is not None:
            stop = self.path(prune_empty_parents_up_to)
            parent = path.rsplit("/", 1)[0]
            while parent.startswith(stop + "/"):
                try:
                    self._wait(self._client.delete_async(parent))
                except (NotEmptyError, NoNodeError):
                    break
                except KazooException:
                    break  # the node itself is gone; an empty parent left behind is harmless
                parent = parent.rsplit("/", 1)[0]

    def exists(self, relative: str) -> bool:
        try:
            return self._wait(self._client.exists_async(self.path(relative))) is not None
        except KazooException as e:
            raise Unavailable(f"ZooKeeper: {e}") from None

    def children(self, relative: str) -> list[str]:
        try:
            return sorted(self._wait(self._client.get_children_async(self.path(relative))))
        except NoNodeError:
            return []
        except KazooException as e:
            raise Unavailable(f"ZooKeeper: {e}") from None

    def get(self, relative: str) -> bytes:
        try:
            data, _ = self._wait(self._client.get_async(self.path(relative)))
        except NoNodeError:
            raise NotFound(f"{self.path(relative)} does not exist") from None
        except KazooException as e:
            raise Unavailable(f"ZooKeeper: {e}") from None
        return bytes(data)

    def watch_children(self, relative: str, callback: Callable[[list[str]], None]) -> None:
        """Call ``callback(children)`` now and on every change (kazoo thread)."""
        self.ensure(relative)
        ChildrenWatch(self._client, self.path(relative), callback)

    def watch_data(self, relative: str, callback: Callable[[bytes | None], None]) -> None:
        def on_change(data: bytes | None, stat: object) -> None:
            callback(data)

        DataWatch(self._client, self.path(relative), on_change)

    def read_tree(self, relative: str) -> dict[str, bytes]:
        """``{path below relative: data}`` of every node under ``relative``
        (empty if it does not exist), read straight from ZooKeeper."""
        root = self.path(relative)
        nodes: dict[str, bytes] = {}
        stack = [root]
        try:
            while stack:
                parent = stack.pop()
                try:
                    children = self._wait(self._client.get_children_async(parent))
                except NoNodeError:
                    continue  # deleted while we walked
                for child in children:
                    path = f"{parent}/{child}"
                    try:
                        data, _ = self._wait(self._client.get_async(path))
                    except NoNodeError:
                        continue
                    nodes[path[len(root) + 1 :]] = bytes(data or b"")
                    stack.append(path)
        except KazooException as e:
            raise Unavailable(f"ZooKeeper: cannot read {root}: {e}") from None
        return nodes

    def watch_tree(self, relative: str, callback: Callable[[dict[str, bytes]], None]) -> TreeWatch:
        """Call ``callback(nodes)`` with ``{path below relative: data}`` of
        every node under ``relative`` once the subtree is loaded, and again
        after every change (on a kazoo thread, one call at a time). The watch
        outlives connection losses: the subtree is re-read on reconnection."""
        root = self.path(relative)
        cache = TreeCache(self._client, root)
        initialized = False

        def snapshot() -> dict[str, bytes]:
            nodes: dict[str, bytes] = {}
            stack = [root]
            while stack:
                parent = stack.pop()
                for child in cache.get_children(parent, default=frozenset()):
                    path = f"{parent}/{child}"
                    node = cache.get_data(path)
                    nodes[path[len(root) + 1 :]] = bytes(node.data or b"") if node is not None else b""
                    stack.append(path)
            return nodes

        def on_event(event: TreeEvent) -> None:
            nonlocal initialized
            if event.event_type == TreeEvent.INITIALIZED:
                initialized = True
            elif event.event_type not in (TreeEvent.NODE_ADDED, TreeEvent.NODE_UPDATED, TreeEvent.NODE_REMOVED):
                return
            if initialized:
                callback(snapshot())

        def on_fault(error: Exception) -> None:
            log.warning("ZooKeeper watch of %s failed: %s", root, error, exc_info=error)

        cache.listen(on_event)
        cache.listen_fault(on_fault)
        try:
            cache.start()
        except KazooException as e:
            raise Unavailable(f"ZooKeeper: cannot watch {root}: {e}") from None
        return TreeWatch(cache)

    # -- leader election ----------------------------------------------------

    def election(self, relative: str, identifier: str) -> LeaderElection:
        return LeaderElection(Election(self._client, self.path(relative), identifier))


class TreeWatch:
    """A running :meth:`ZooKeeper.watch_tree`."""

    def __init__(self, cache: TreeCache) -> None:
        self._cache = cache

    def close(self) -> None:
        """Stop watching. Idempotent."""
        try:
            self._cache.close()
        except KazooException:
            log.warning("ZooKeeper tree watch did not close cleanly", exc_info=True)


class LeaderElection:
    """kazoo's election recipe, run on its own thread.

    :meth:`run` blocks the calling thread until elected, then calls
    ``lead()`` which must block for as long as this process leads; when it
    returns, leadership is given up.
    """

    def __init__(self, election: Election) -> None:
        self._election = election

    def run(self, lead: Callable[[], None]) -> None:
        try:
            self._election.run(lead)
        except KazooException as e:
            raise Unavailable(f"ZooKeeper election failed: {e}") from None

    def cancel(self) -> None:
        self._election.cancel()

    def held(self) -> bool:
        """Whether this process holds the lead now: its election node exists
        and belongs to the current session (not to one that was lost)."""
        lock = self._election.lock
        client, node = lock.client, lock.node
        session = client.client_id
        if not lock.is_acquired or node is None or session is None:
            return False
        try:
            stat = client.exists(f"{lock.path}/{node}")
        except KazooException:
            return False
        return stat is not None and stat.ephemeralOwner == session[0]

    def contenders(self) -> list[str]:
        try:
            return [str(c) for c in self._election.contenders()]
        except KazooException as e:
            raise Unavailable(f"ZooKeeper: {e}") from None

    def evict(self, dead: Callable[[str], bool]) -> list[str]:
        """Delete the election nodes of contenders ``dead(identifier)`` says
        are gone, so the next one in line leads now instead of after their
        session timeout; returns their identifiers. Only for contenders known
        dead for certain: an evicted live leader would lead on beside the next.
        """
        lock = self._election.lock
        client, path = lock.client, lock.path
        evicted = []
        try:
            for child in client.get_children(path):
                try:
                    data, _ = client.get(f"{path}/{child}")
                except NoNodeError:
                    continue
                identifier = data.decode(errors="replace")
                if dead(identifier):
                    with contextlib.suppress(NoNodeError):
                        client.delete(f"{path}/{child}")
                    evicted.append(identifier)
        except NoNodeError:
            return evicted
        except KazooException as e:
            raise Unavailable(f"ZooKeeper: {e}") from None
        return evicted
