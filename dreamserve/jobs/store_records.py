"""The store's simple records: the webhook outbox's read side, uploaded files and API keys.

A mixin of SqlStore (store.py): these need no state machine, only one statement each.
"""

from __future__ import annotations

import builtins
import time

from dreamserve.jobs import rows
from dreamserve.jobs.connector import Connector
from dreamserve.jobs.model import ApiKey, FileRecord, NotFound, WebhookDelivery

# How long a dispatcher owns a delivery it took; if it dies sending, another retries after this.
DELIVERY_CLAIM_SECONDS = 60.0


class RecordsMixin:
    db: Connector

    # --- webhook outbox (written by store.py/outbox.py with each state change)

    def due_deliveries(self, now: float, limit: int) -> builtins.list[WebhookDelivery]:
        """Take up to `limit` due deliveries, oldest first, for DELIVERY_CLAIM_SECONDS: two
        dispatchers never send the same row at once; a dispatcher that dies releases it."""
        with self.db.read() as tx:  # idle polling takes no write lock
            if tx.one("any_due", now=now) is None:
                return []
        until = now + DELIVERY_CLAIM_SECONDS
        with self.db.write() as tx:
            taken = tx.all("claim_due", now=now, until=until, limit=limit)
        # RETURNING has no defined order: restore the outbox's (send order) sequence.
        return [rows.delivery(r) for r in sorted(taken, key=lambda r: int(r["n"]))]

    def delivery_done(self, delivery_id: str) -> None:
        with self.db.write() as tx:
            tx.run("delivery_done", id=delivery_id)

    def delivery_failed(self, delivery_id: str, next_attempt_at: float | None) -> None:
        now = time.time()
        with self.db.write() as tx:
            if next_attempt_at is None:
                tx.run("delivery_give_up", id=delivery_id, now=now)
            else:
                tx.run("delivery_retry", id=delivery_id, now=now, next=next_attempt_at)

    def deliveries_for(self, prediction_id: str) -> builtins.list[WebhookDelivery]:
        """Every owed (or given-up) delivery of one prediction, in send order: for tests/health."""
        with self.db.read() as tx:
            return [rows.delivery(r) for r in tx.all("deliveries_for", prediction_id=prediction_id)]

    # --- files

    def add_file(self, record: FileRecord) -> None:
        with self.db.write() as tx:
            tx.run(
                "insert_file",
                id=record.id,
                owner=record.owner,
                name=record.name,
                content_type=record.content_type,
                size=record.size,
                sha256=record.sha256,
                blob_key=record.blob_key,
                metadata=rows.dumps(record.metadata),
                created_at=record.created_at,
                expires_at=record.expires_at,
            )

    def get_file(self, file_id: str, owner: str | None = None) -> FileRecord:
        with self.db.read() as tx:
            row = tx.one("get_file", id=file_id)
        if row is None or (owner is not None and row["owner"] != owner):
            raise NotFound(file_id)
        return rows.file_record(row)

    def list_files(self, owner: str | None, limit: int) -> builtins.list[FileRecord]:
        with self.db.read() as tx:
            return [rows.file_record(r) for r in tx.all("list_files", owner=owner, limit=limit)]

    def delete_file(self, file_id: str, owner: str | None = None) -> FileRecord:
        with self.db.write() as tx:
            row = tx.one("get_file", id=file_id)
            if row is None or (owner is not None and row["owner"] != owner):
                raise NotFound(file_id)
            tx.run("delete_file", id=file_id)
        return rows.file_record(row)

    # --- API keys (only hashes are stored; auth hashes the presented token)

    def create_key(self, name: str, token_hash: str) -> ApiKey:
        with self.db.write() as tx:
            row = tx.one(
                "insert_key", id=rows.new_id(), name=name, token_hash=token_hash, now=time.time()
            )
        assert row is not None
        return rows.api_key(row)

    def key_for_hash(self, token_hash: str) -> ApiKey | None:
        """The active key with this hash; a revoked key is None, so it cannot authenticate."""
        with self.db.read() as tx:
            row = tx.one("key_for_hash", token_hash=token_hash)
        return None if row is None else rows.api_key(row)

    def list_keys(self) -> builtins.list[ApiKey]:
        with self.db.read() as tx:
            return [rows.api_key(r) for r in tx.all("list_keys")]

    def revoke_key(self, key_id: str) -> ApiKey:
        with self.db.write() as tx:
            row = tx.one("revoke_key", id=key_id, now=time.time())
        if row is None:
            raise NotFound(key_id)
        return rows.api_key(row)

    def has_keys(self) -> bool:
        with self.db.read() as tx:
            return tx.one("has_keys") is not None
