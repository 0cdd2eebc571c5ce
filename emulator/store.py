"""One org's records: create, update, upsert, delete with Salesforce's checks, and undo for allOrNone."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from emulator.errors import ApiError, not_found
from emulator.ids import IdFactory, to_18
from emulator.schema import OBJECTS, SObject
from emulator.sftime import format_epoch
from emulator.values import check_writable

__all__ = ["USER_ID", "Store"]

# Every write is made by the one integration user the emulator knows about.
USER_ID = "005000000000001AAA"


@dataclass
class _Table:
    sobject: SObject
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_external_id: dict[str, str] = field(default_factory=dict)
    deleted_at: dict[str, float] = field(default_factory=dict)


class Store:
    """Records of one org, keyed by object name then 18-character id."""

    def __init__(self, pod: int, clock: Callable[[], float]) -> None:
        self._ids = IdFactory(pod)
        self._clock = clock
        self._tables = {name: _Table(sobject) for name, sobject in OBJECTS.items()}
        self._journal: list[tuple[str, str, dict[str, Any] | None, float | None]] | None = None
        self._case_number = 1000
        self.created_at = clock()

    # -- reading -------------------------------------------------------------------------------

    def scan(self, sobject: str, include_deleted: bool = False) -> Iterator[dict[str, Any]]:
        """Every record of ``sobject`` in creation order; deleted ones only for queryAll."""
        for record in self._tables[sobject].records.values():
            if include_deleted or not record["IsDeleted"]:
                yield record

    def get(self, sobject: str, record_id: str) -> dict[str, Any]:
        """The live record with ``record_id`` (15 or 18 characters); 404 otherwise."""
        record = self._find(sobject, record_id)
        if record["IsDeleted"]:
            raise ApiError(404, "ENTITY_IS_DELETED", "entity is deleted")
        return record

    def get_by_external_id(self, sobject: str, field_name: str, value: str) -> dict[str, Any]:
        """The live record whose external id ``field_name`` is ``value``; 404 otherwise."""
        self._external_field(sobject, field_name)
        found = self._tables[sobject].by_external_id.get(value)
        if found is None or self._tables[sobject].records[found]["IsDeleted"]:
            raise not_found()
        return self._tables[sobject].records[found]

    def updated_ids(self, sobject: str, start: float, end: float) -> list[str]:
        """Ids of live records whose SystemModstamp lies in ``[start, end)``."""
        low, high = format_epoch(start), format_epoch(end)
        return [r["Id"] for r in self.scan(sobject) if low <= r["SystemModstamp"] < high]

    def deleted_records(self, sobject: str, start: float, end: float) -> list[dict[str, str]]:
        """``{"id", "deletedDate"}`` of records deleted in ``[start, end)``."""
        deleted = self._tables[sobject].deleted_at.items()
        return [{"id": rid, "deletedDate": format_epoch(at)} for rid, at in deleted if start <= at < end]

    # -- writing -------------------------------------------------------------------------------

    def create(self, sobject: str, body: dict[str, Any], at: float | None = None) -> str:
        """Insert a record and return its id; ``at`` backdates seeded records."""
        table = self._tables[sobject]
        values = check_writable(table.sobject, body, creating=True)
        record: dict[str, Any] = {name: f.default for name, f in table.sobject.fields.items()}
        record.update(values)
        missing = [f.name for f in table.sobject.fields.values() if f.required and record[f.name] is None]
        if missing:
            raise ApiError(400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]",
                           missing)
        self._check_unique(table, record, None)
        record_id = self._ids.new(table.sobject.key_prefix)
        stamp = format_epoch(self._clock() if at is None else at)
        record.update(Id=record_id, IsDeleted=False, CreatedDate=stamp, CreatedById=USER_ID,
                      LastModifiedDate=stamp, LastModifiedById=USER_ID, SystemModstamp=stamp)
        if "CaseNumber" in record:
            self._case_number += 1
            record["CaseNumber"] = f"{self._case_number:08d}"
        _derive(record)
        self._put(table, record_id, record, None)
        return record_id

    def update(self, sobject: str, record_id: str, body: dict[str, Any]) -> None:
        """Change fields of a live record and bump its SystemModstamp."""
        table = self._tables[sobject]
        current = self.get(sobject, record_id)
        values = check_writable(table.sobject, body, creating=False)
        record = {**current, **values}
        self._check_unique(table, record, current["Id"])
        stamp = format_epoch(self._clock())
        record.update(LastModifiedDate=stamp, LastModifiedById=USER_ID, SystemModstamp=stamp)
        _derive(record)
        self._put(table, current["Id"], record, None)

    def upsert(self, sobject: str, field_name: str, value: str, body: dict[str, Any]) -> tuple[str, bool]:
        """Update the record whose external id matches, or create it; returns ``(id, created)``."""
        field_name = self._external_field(sobject, field_name)
        body = {k: v for k, v in body.items() if k.lower() != field_name.lower()}
        found = self._tables[sobject].by_external_id.get(value)
        if found is not None and not self._tables[sobject].records[found]["IsDeleted"]:
            self.update(sobject, found, body)
            return found, False
        return self.create(sobject, {**body, field_name: value}), True

    def delete(self, sobject: str, record_id: str) -> None:
        """Move a live record to the recycle bin: queryAll and ``deleted/`` still see it."""
        table = self._tables[sobject]
        current = self.get(sobject, record_id)
        now = self._clock()
        stamp = format_epoch(now)
        record = {**current, "IsDeleted": True, "SystemModstamp": stamp}
        self._put(table, current["Id"], record, now)

    def object_of(self, record_id: str) -> str | None:
        """The object name an id belongs to, from its key prefix."""
        return next((o.name for o in OBJECTS.values() if record_id.startswith(o.key_prefix)), None)

    # -- allOrNone -------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Callable[[], None]]:
        """Journal writes made inside; the yielded function undoes all of them."""
        outer = self._journal
        journal: list[tuple[str, str, dict[str, Any] | None, float | None]] = []
        self._journal = journal

        def rollback() -> None:
            for sobject, record_id, previous, deleted_at in reversed(journal):
                table = self._tables[sobject]
                self._index(table, table.records.get(record_id), None)
                if previous is None:
                    del table.records[record_id]
                else:
                    table.records[record_id] = previous
                    self._index(table, None, previous)
                if deleted_at is None:
                    table.deleted_at.pop(record_id, None)
                else:
                    table.deleted_at[record_id] = deleted_at
            journal.clear()

        try:
            yield rollback
        finally:
            self._journal = outer
            if outer is not None:
                outer.extend(journal)

    # -- internals -------------------------------------------------------------------------------

    def _find(self, sobject: str, record_id: str) -> dict[str, Any]:
        full = to_18(record_id)
        record = self._tables[sobject].records.get(full or "")
        if record is None:
            raise not_found()
        return record

    def _external_field(self, sobject: str, field_name: str) -> str:
        field = self._tables[sobject].sobject.field(field_name)
        if field is None or not field.external_id:
            raise ApiError(404, "NOT_FOUND",
                           f"Provided external ID field does not exist or is not accessible: {field_name}")
        return field.name

    def _check_unique(self, table: _Table, record: dict[str, Any], own_id: str | None) -> None:
        value = record.get("External_Id__c")
        holder = table.by_external_id.get(value) if value is not None else None
        if holder is not None and holder != own_id and not table.records[holder]["IsDeleted"]:
            raise ApiError(400, "DUPLICATE_VALUE",
                           f"duplicate value found: External_Id__c duplicates value on record with id: {holder}",
                           ["External_Id__c"])

    def _put(self, table: _Table, record_id: str, record: dict[str, Any], deleted_at: float | None) -> None:
        previous = table.records.get(record_id)
        if self._journal is not None:
            self._journal.append((table.sobject.name, record_id, previous, table.deleted_at.get(record_id)))
        self._index(table, previous, record)
        table.records[record_id] = record
        if deleted_at is not None:
            table.deleted_at[record_id] = deleted_at

    @staticmethod
    def _index(table: _Table, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        if old is not None and old.get("External_Id__c") is not None:
            table.by_external_id.pop(old["External_Id__c"], None)
        if new is not None and new.get("External_Id__c") is not None:
            table.by_external_id[new["External_Id__c"]] = new["Id"]


def _derive(record: dict[str, Any]) -> None:
    # Name is a compound field on people (read-only, built from its parts).
    if "FirstName" in record and "LastName" in record:
        record["Name"] = " ".join(p for p in (record["FirstName"], record["LastName"]) if p)
