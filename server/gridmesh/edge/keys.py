"""The API keys of the edge, in MySQL (``<namespace>_gridmesh_auth.api_keys``).

Rows hold a key's id, role, bound name, expiry and revocation, and the
SHA-256 of its secret: never the secret. Used by ``gridmesh keys`` and
``gridmesh up`` (which registers the local admin key) and read whole, every
``auth.refresh_s``, by the authorizer: a handful of rows, and a revocation
reaches the edge within that interval.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pymysql.cursors import Cursor

from gridmesh.adapters.mysql import MySQL
from gridmesh.common.errors import InvalidArgument, NotFound
from gridmesh.config import MeshConfig
from gridmesh.core.access import KeyRecord, Role, check_role, digest, new_key, parse_key

MIGRATIONS = (
    """CREATE TABLE api_keys (
        key_id CHAR(12) NOT NULL PRIMARY KEY,
        digest CHAR(64) NOT NULL,
        role VARCHAR(16) NOT NULL,
        name VARCHAR(63) NOT NULL DEFAULT '',
        note VARCHAR(255) NOT NULL DEFAULT '',
        created_at DATETIME(6) NOT NULL,
        expires_at DATETIME(6) NULL,
        revoked_at DATETIME(6) NULL
    )""",
)
_COLUMNS = "key_id, digest, role, name, created_at, expires_at, revoked_at, note"
MAX_NOTE_CHARS = 255


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None else None


def _naive(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC).replace(tzinfo=None) if value is not None else None


def _record(row: tuple[Any, ...]) -> KeyRecord:
    key_id, key_digest, role, name, created, expires, revoked, note = row
    return KeyRecord(key_id, key_digest, Role(role), name, _utc(created), _utc(expires), _utc(revoked), note)  # type: ignore[arg-type]


class KeyStore:
    """The key table; every method blocks (call it off the event loop)."""

    def __init__(self, db: MySQL) -> None:
        self._db = db

    @classmethod
    def open(cls, config: MeshConfig) -> KeyStore:
        db = MySQL(config.mysql_login("auth"), config.database("auth"))
        try:
            db.ensure_schema(MIGRATIONS)
        except BaseException:
            db.close()
            raise
        return cls(db)

    def create(
        self, role: str, name: str = "", *, expires_at: datetime | None = None, note: str = ""
    ) -> tuple[KeyRecord, str]:
        """A new key: its record and the whole key, to be shown once."""
        checked, name = check_role(role, name)
        if len(note) > MAX_NOTE_CHARS:
            raise InvalidArgument(f"the note is longer than {MAX_NOTE_CHARS} characters", field="note")
        now = datetime.now(UTC)
        if expires_at is not None and expires_at <= now:
            raise InvalidArgument("the expiry must be in the future", field="expires")
        key_id, key_digest, key = new_key()
        record = KeyRecord(key_id, key_digest, checked, name, now, expires_at, None, note)
        self._insert(record)
        return record, key

    def create_join_token(self, expires_at: datetime, note: str = "") -> tuple[KeyRecord, str]:
        """A key of the ``join`` role, for one ``Enrollment/Join`` before ``expires_at``."""
        now = datetime.now(UTC)
        if expires_at <= now:
            raise InvalidArgument("the expiry must be in the future", field="expires")
        key_id, key_digest, key = new_key()
        record = KeyRecord(key_id, key_digest, Role.JOIN, "", now, expires_at, None, note or "join token")
        self._insert(record)
        return record, key

    def use_join_token(self, key_id: str) -> bool:
        """Mark a usable join token used (revoked); whether this call did it.
        Atomic: of two calls with one token, one gets True."""
        now = _naive(datetime.now(UTC))

        def work(cur: Cursor) -> int:
            return int(
                cur.execute(
                    "UPDATE api_keys SET revoked_at = %s WHERE key_id = %s AND role = %s AND revoked_at IS NULL "
                    "AND (expires_at IS NULL OR expires_at > %s)",
                    (now, key_id, Role.JOIN.value, now),
                )
            )

        return self._db.write_sync(work) == 1

    def register(self, key: str, role: Role, note: str) -> bool:
        """Make sure ``key`` (e.g. the admin key in a credentials file) is a
        usable key of ``role``; answers whether it was added now."""
        key_id, secret = parse_key(key)
        existing = {r.key_id: r for r in self.all()}.get(key_id)
        if existing is not None:
            if existing.digest != digest(secret) or existing.role is not role or existing.revoked_at:
                raise InvalidArgument(
                    f"a different or revoked key {key_id} is registered already; remove the credentials file "
                    "to have a new admin key made"
                )
            return False
        self._insert(KeyRecord(key_id, digest(secret), role, "", datetime.now(UTC), None, None, note))
        return True

    def _insert(self, record: KeyRecord) -> None:
        def work(cur: Cursor) -> None:
            cur.execute(
                f"INSERT INTO api_keys ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    record.key_id,
                    record.digest,
                    record.role.value,
                    record.name,
                    _naive(record.created_at),
                    _naive(record.expires_at),
                    None,
                    record.note,
                ),
            )

        self._write(work)

    def all(self) -> list[KeyRecord]:
        def work(cur: Cursor) -> list[KeyRecord]:
            cur.execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, key_id")
            return [_record(row) for row in cur.fetchall()]

        return self._db.read_sync(work)

    def revoke(self, key_id: str) -> KeyRecord:
        """Revoke a key (idempotent); :class:`NotFound` if there is none."""

        def work(cur: Cursor) -> None:
            cur.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, %s) WHERE key_id = %s",
                (_naive(datetime.now(UTC)), key_id),
            )

        self._write(work)
        found = {r.key_id: r for r in self.all()}.get(key_id)
        if found is None:
            raise NotFound(f"no key {key_id!r}; `gridmesh keys list` shows them", field="key_id")
        return found

    def _write(self, work: Callable[[Cursor], None]) -> None:
        self._db.write_sync(work)

    def close(self) -> None:
        self._db.close()
