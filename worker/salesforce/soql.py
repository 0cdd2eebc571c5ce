"""Safe SOQL: names checked against Salesforce's naming rules, literals escaped, never concatenated raw.

No job input reaches a query except through ``check_name`` (objects and fields) and ``literal``.

Salesforce matches API names without regard to case (``LEAD`` is ``Lead``), so one object may be spelled
several ways. ``canonical_object`` gives a standard object Salesforce's own spelling (what jobs carry, what is
sent and shown); ``object_key`` is an object's one identity in Redis keys (checkpoint, lock, active pull): the
canonical spelling for a standard object, so keys written before names were matched stay where they were, and
the name in lower case for any other (custom objects, whose spelling is their admin's choice).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

from quota.errors import InvalidInput
from worker.errors import InvalidName

__all__ = ["STANDARD_OBJECTS", "canonical_object", "check_name", "datetime_literal", "literal", "object_key",
           "pull_query"]

# An API name: a letter, then letters, digits and single underscores, not ending in one; optionally a
# namespace prefix (ns__) and a custom suffix (__c, __r, __mdt, ...). At most 80 characters.
_PART = r"[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*"
_NAME = re.compile(rf"(?:{_PART}__)?{_PART}(?:__(?:c|r|mdt|e|x|b|kav|ka|share|history|feed))?")
_MAX_NAME = 80
_ESCAPES = {"\\": "\\\\", "'": "\\'", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}
_SHOWN = 60  # characters of a refused name an error message repeats, so it stays one short line

# Salesforce's standard objects that integrations sync, spelled as Salesforce spells them. Standard names are
# fixed by Salesforce, so this spelling is the canonical one whatever the org; a standard object missing here
# is still one object (``object_key`` folds its case), only sent as the caller spelled it.
STANDARD_OBJECTS: tuple[str, ...] = (
    "Account", "AccountContactRelation", "AccountTeamMember", "Asset", "Attachment", "Campaign", "CampaignMember",
    "Case", "CaseComment", "Contact", "ContentDocument", "ContentDocumentLink", "ContentVersion", "Contract",
    "ContractLineItem", "Entitlement", "Event", "FeedItem", "Individual", "Lead", "Note", "Opportunity",
    "OpportunityContactRole", "OpportunityLineItem", "OpportunityTeamMember", "Order", "OrderItem", "Pricebook2",
    "PricebookEntry", "Product2", "Quote", "QuoteLineItem", "RecordType", "ServiceAppointment", "ServiceContract",
    "Task", "User", "UserRole", "WorkOrder", "WorkOrderLineItem",
)
_CANONICAL = {name.lower(): name for name in STANDARD_OBJECTS}


def check_name(name: object, what: str = "name") -> str:
    """Return ``name`` if it is a valid Salesforce API name, else raise ``InvalidName``."""
    if not isinstance(name, str) or len(name) > _MAX_NAME or not _NAME.fullmatch(name):
        shown = repr(name[:_SHOWN] + "...") if isinstance(name, str) and len(name) > _SHOWN else repr(name)
        raise InvalidName(
            f"invalid {what} {shown}: Salesforce API names are letters, digits and single underscores, "
            "starting with a letter (custom names end in __c)"
        )
    return name


def canonical_object(name: str) -> str:
    """``name`` as Salesforce spells it if it is a standard object in ``STANDARD_OBJECTS`` (``LEAD`` ->
    ``Lead``), else ``name`` unchanged."""
    return _CANONICAL.get(name.lower(), name)


def object_key(name: str) -> str:
    """The one name an object goes by in Redis keys, however it is spelled: its canonical spelling if it is a
    known standard object, else ``name`` in lower case."""
    return _CANONICAL.get(name.lower(), name.lower())


def literal(value: str | int | float | bool | datetime | None) -> str:
    """A SOQL literal for ``value``: strings quoted and escaped, datetimes unquoted in UTC."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return datetime_literal(value)
    if isinstance(value, int | float):
        return repr(value)
    return "'" + "".join(_ESCAPES.get(ch, ch) for ch in value) + "'"


def datetime_literal(value: datetime) -> str:
    """An unquoted SOQL datetime literal (``2024-01-01T00:00:00.000Z``); naive datetimes are refused."""
    if value.tzinfo is None:
        raise InvalidInput(f"datetime {value.isoformat()} has no time zone")
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def pull_query(sobject: str, fields: Sequence[str], since: datetime | None, *, ordered: bool = True) -> str:
    """The incremental read of ``sobject``: every record modified at or after ``since``, oldest first
    (``ordered=False`` for a Bulk API 2.0 query job, which takes no ORDER BY)."""
    # Salesforce refuses a field selected twice, in any spelling (``Name, NAME``): each is kept once, first spelling.
    unique: dict[str, str] = {}
    for name in ["Id", "SystemModstamp", *fields]:
        unique.setdefault(check_name(name, "field").lower(), name)
    names = list(unique.values())
    # Every name is checked against the naming rules and the datetime is formatted by us: nothing raw goes in.
    query = f"SELECT {', '.join(names)} FROM {check_name(sobject, 'object')}"  # noqa: S608
    if since is not None:
        query += f" WHERE SystemModstamp >= {datetime_literal(since)}"
    return query + " ORDER BY SystemModstamp ASC" if ordered else query
