"""Execution records on disk: one directory per id (meta.json and the event log), claimed
once, listed newest first, expired by retention into the ledger."""

from __future__ import annotations

import os
import shutil
import threading

from jupyter_remote.agent.executions.record import Execution
from jupyter_remote.agent.index import ExecutionIndex
from jupyter_remote.agent.specs import check_id
from jupyter_remote.agent.state import read_json, write_json
from jupyter_remote.agent.tenants import unknown
from jupyter_remote.protocol.common import EXECUTION_FINAL
from jupyter_remote.protocol.errors import BadRequest, Conflict, NotFound
from jupyter_remote.protocol.queries import PageQuery, page


class ExecutionStore:
    """The records of this node's executions: running ones in memory, all on disk."""

    def __init__(self, data_dir: str, node_id: str) -> None:
        self.root = os.path.join(data_dir, "executions")
        os.makedirs(self.root, exist_ok=True)
        self.node_id = node_id
        self.running: dict[str, Execution] = {}
        self._claim_lock = threading.Lock()
        self.index = ExecutionIndex(self.root)
        self.ledger = None  # the Ledger of expired ids, set by the Agent

    def record_dir(self, execution_id: str) -> str:
        return os.path.join(self.root, execution_id)

    def log_path(self, execution_id: str) -> str:
        return os.path.join(self.record_dir(execution_id), "events.ndjson")

    def save(self, ex: Execution) -> None:
        write_json(os.path.join(self.record_dir(ex.execution_id), "meta.json"), ex.to_json())

    def get(self, execution_id: str) -> dict:
        """The model of a running or finished execution, from memory or from disk."""
        check_id(execution_id, "execution_id")
        if execution_id in self.running:
            return self.running[execution_id].to_json()
        meta = read_json(os.path.join(self.record_dir(execution_id), "meta.json"))
        if meta is None:
            if self.ledger is not None:
                self.ledger.refuse("execution", execution_id, "execution")
            raise unknown("execution", execution_id, self.node_id)
        return meta

    def get_or_none(self, execution_id: str) -> dict | None:
        try:
            return self.get(execution_id)
        except (NotFound, BadRequest):
            return None

    def list(self, query: PageQuery, keep=lambda tenant: True) -> dict:
        """One page of executions, newest first by (started_at, id), and the next cursor;
        only those whose tenant `keep` accepts (a tenant's own)."""
        running = dict(self.running)
        keys = [
            {"execution_id": k, "started_at": d.started_at}
            for k, d in self.index.refresh(running).items()
            if keep(d.tenant)
        ]
        keys += [
            {"execution_id": k, "started_at": ex.started_at}
            for k, ex in running.items()
            if keep(ex.tenant)
        ]
        got = page(keys, query, "started_at", "execution_id")
        return {
            **got,
            "items": [m for k in got["items"] if (m := self.get_or_none(k["execution_id"]))],
        }

    def running_count(self) -> int:
        return len(self.running)

    def claim(self, ex: Execution) -> None:
        """Reserve the id on disk; a second request with the same id gets 409, ever."""
        with self._claim_lock:
            gone = self.ledger.get("execution", ex.execution_id) if self.ledger else None
            if gone is not None:
                raise Conflict(
                    f"execution {ex.execution_id!r} ran on node {self.node_id!r} and its record "
                    "expired; an id is never run twice",
                    reason="duplicate_execution",
                    execution={"execution_id": ex.execution_id, "expired": True, **gone},
                )
            try:
                os.mkdir(self.record_dir(ex.execution_id))
            except FileExistsError:
                first = self.get_or_none(ex.execution_id) or {"status": "starting"}
                raise Conflict(
                    f"execution {ex.execution_id!r} was already received by node "
                    f"{self.node_id!r} (status {first['status']}); it is never run twice",
                    reason="duplicate_execution",
                    execution=first,
                ) from None
            self.running[ex.execution_id] = ex

    def expire(self, execution_ids: list[str]) -> int:
        """Retention: remove finished records and logs, their ids into the ledger first."""
        found = {}
        for eid in execution_ids:
            meta = read_json(os.path.join(self.record_dir(eid), "meta.json"))
            if eid not in self.running and meta and meta.get("status") in EXECUTION_FINAL:
                found[eid] = meta
        if found:
            self.ledger.add("execution", found)
        for eid in found:
            trash = os.path.join(self.root, f".expired-{eid}")
            try:
                os.rename(self.record_dir(eid), trash)  # atomic: no half-removed record is read
            except FileNotFoundError:
                continue
            shutil.rmtree(trash, ignore_errors=True)
            self.index.forget(eid)
        return len(found)
