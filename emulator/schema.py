"""The six sObjects the emulator serves, their fields, and their describe results."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["OBJECTS", "Field", "SObject", "describe", "describe_global_entry", "lookup_object"]

# Field types whose values are JSON numbers; besides boolean, date and datetime, the rest are strings.
NUMBER_TYPES = frozenset({"int", "double", "currency", "percent"})


@dataclass(frozen=True)
class Field:
    """One field of an sObject, with the describe flags simple-salesforce users look at."""

    name: str
    type: str
    label: str = ""
    createable: bool = True
    updateable: bool = True
    nillable: bool = True
    external_id: bool = False
    length: int = 0
    picklist: tuple[str, ...] = ()
    reference_to: tuple[str, ...] = ()
    default: Any = None
    rich_text: bool = False

    @property
    def long_text(self) -> bool:
        """A long text area or rich text area: a textarea longer than 255 characters."""
        return self.type == "textarea" and self.length > 255

    @property
    def required(self) -> bool:
        """Must be given on create: Salesforce answers REQUIRED_FIELD_MISSING otherwise."""
        return self.createable and not self.nillable and self.default is None

    def describe(self) -> dict[str, Any]:
        """This field's entry in the describe result."""
        return {
            "name": self.name,
            "label": self.label or self.name.replace("__c", "").replace("_", " "),
            "type": self.type,
            "length": self.length,
            "custom": self.name.endswith("__c"),
            "createable": self.createable,
            "updateable": self.updateable,
            "nillable": self.nillable,
            "externalId": self.external_id,
            "idLookup": self.external_id or self.name == "Id",
            "unique": self.external_id,
            "filterable": True,
            "sortable": self.type != "textarea",
            # How describe tells a (long) text area from a rich text area: both are of type textarea.
            "extraTypeInfo": ("richtextarea" if self.rich_text else "plaintextarea") if self.type == "textarea"
            else None,
            "htmlFormatted": self.rich_text,
            "defaultedOnCreate": self.default is not None or not (self.createable or self.nillable),
            "picklistValues": [
                {"active": True, "defaultValue": value == self.default, "label": value, "value": value}
                for value in self.picklist
            ],
            "referenceTo": list(self.reference_to),
        }


@dataclass(frozen=True)
class SObject:
    """An sObject type: its name, id key prefix and fields (by canonical name)."""

    name: str
    key_prefix: str
    label_plural: str
    fields: dict[str, Field] = field(default_factory=dict)

    def field(self, name: str) -> Field | None:
        """The field called ``name``, matched case-insensitively as Salesforce does."""
        return self.fields.get(name) or self._by_lower.get(name.lower())

    @property
    def _by_lower(self) -> dict[str, Field]:
        return _LOWER_INDEX[self.name]


def _computed(f: Field) -> Field:
    return replace(f, createable=False, updateable=False)


def _system_fields() -> list[Field]:
    user = ("User",)
    read_only = [
        Field("Id", "id", "Record ID", nillable=False, length=18),
        Field("IsDeleted", "boolean", "Deleted", nillable=False),
        Field("CreatedDate", "datetime", "Created Date", nillable=False),
        Field("CreatedById", "reference", "Created By ID", nillable=False, length=18, reference_to=user),
        Field("LastModifiedDate", "datetime", "Last Modified Date", nillable=False),
        Field("LastModifiedById", "reference", "Last Modified By ID", nillable=False, length=18,
              reference_to=user),
        Field("SystemModstamp", "datetime", "System Modstamp", nillable=False),
    ]
    return [*map(_computed, read_only), Field("External_Id__c", "string", "External Id", external_id=True,
                                              length=255)]


def _text(name: str, length: int = 255, **flags: Any) -> Field:
    return Field(name, "string", length=length, **flags)


def _ref(name: str, target: str) -> Field:
    return Field(name, "reference", length=18, reference_to=(target,))


def _picklist(name: str, values: tuple[str, ...], default: str | None = None, **flags: Any) -> Field:
    return Field(name, "picklist", length=255, picklist=values, default=default, **flags)


_INDUSTRIES = ("Agriculture", "Banking", "Education", "Energy", "Healthcare", "Retail", "Technology")
_SOURCES = ("Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Other")

_OBJECT_FIELDS: dict[tuple[str, str, str], list[Field]] = {
    ("Lead", "00Q", "Leads"): [
        _text("FirstName", 40), _text("LastName", 80, nillable=False), _computed(_text("Name", 121)),
        _text("Company", 255, nillable=False), _text("Title", 128),
        Field("Email", "email", length=80), Field("Phone", "phone", length=40),
        _picklist("Status", ("Open - Not Contacted", "Working - Contacted", "Closed - Converted",
                             "Closed - Not Converted"), default="Open - Not Contacted", nillable=False),
        _picklist("LeadSource", _SOURCES), _picklist("Industry", _INDUSTRIES),
        Field("AnnualRevenue", "currency"), Field("NumberOfEmployees", "int"),
        _text("City", 40), _text("Country", 80),
        _computed(Field("IsConverted", "boolean", nillable=False, default=False)),
        # Custom long text and rich text areas: selecting both caps a query page at 200 records.
        Field("Notes__c", "textarea", "Notes", length=32768),
        Field("Profile__c", "textarea", "Profile", length=32768, rich_text=True),
    ],
    ("Account", "001", "Accounts"): [
        _text("Name", 255, nillable=False),
        _picklist("Type", ("Prospect", "Customer - Direct", "Customer - Channel", "Partner", "Other")),
        _picklist("Industry", _INDUSTRIES), Field("AnnualRevenue", "currency"),
        Field("NumberOfEmployees", "int"), Field("Phone", "phone", length=40),
        Field("Website", "url", length=255), _text("BillingCity", 40), _text("BillingCountry", 80),
    ],
    ("Contact", "003", "Contacts"): [
        _text("FirstName", 40), _text("LastName", 80, nillable=False), _computed(_text("Name", 121)),
        _ref("AccountId", "Account"), Field("Email", "email", length=80), Field("Phone", "phone", length=40),
        _text("Title", 128), _text("Department", 80), _text("MailingCity", 40), Field("Birthdate", "date"),
        _picklist("LeadSource", _SOURCES),
    ],
    ("Opportunity", "006", "Opportunities"): [
        _text("Name", 120, nillable=False), _ref("AccountId", "Account"),
        _picklist("StageName", ("Prospecting", "Qualification", "Proposal/Price Quote", "Negotiation/Review",
                                "Closed Won", "Closed Lost"), nillable=False),
        Field("CloseDate", "date", nillable=False), Field("Amount", "currency"),
        Field("Probability", "percent"), _picklist("Type", ("New Customer", "Existing Customer - Upgrade")),
        _picklist("LeadSource", _SOURCES),
        _computed(Field("IsClosed", "boolean", nillable=False, default=False)),
        _computed(Field("IsWon", "boolean", nillable=False, default=False)),
    ],
    ("Campaign", "701", "Campaigns"): [
        _text("Name", 80, nillable=False),
        _picklist("Type", ("Email", "Webinar", "Conference", "Advertisement", "Other")),
        _picklist("Status", ("Planned", "In Progress", "Completed", "Aborted"), default="Planned"),
        Field("IsActive", "boolean", nillable=False, default=False), Field("StartDate", "date"),
        Field("EndDate", "date"), Field("BudgetedCost", "currency"), Field("ExpectedRevenue", "currency"),
        _computed(Field("NumberOfLeads", "int", nillable=False, default=0)),
    ],
    ("Case", "500", "Cases"): [
        _computed(_text("CaseNumber", 30, nillable=False)), _text("Subject", 255),
        Field("Description", "textarea", length=32000),
        _picklist("Status", ("New", "Working", "Escalated", "Closed"), default="New", nillable=False),
        _picklist("Priority", ("High", "Medium", "Low"), default="Medium"),
        _picklist("Origin", ("Phone", "Email", "Web")), _ref("AccountId", "Account"),
        _ref("ContactId", "Contact"), _computed(Field("IsClosed", "boolean", nillable=False, default=False)),
    ],
}


def _build() -> dict[str, SObject]:
    objects = {}
    for (name, prefix, plural), own in _OBJECT_FIELDS.items():
        fields = _system_fields()[:-1] + own + _system_fields()[-1:]
        objects[name] = SObject(name, prefix, plural, {f.name: f for f in fields})
    return objects


OBJECTS: dict[str, SObject] = _build()
_LOWER_INDEX = {o.name: {name.lower(): f for name, f in o.fields.items()} for o in OBJECTS.values()}
_OBJECTS_LOWER = {name.lower(): o for name, o in OBJECTS.items()}


def lookup_object(name: str) -> SObject | None:
    """The sObject called ``name`` (case-insensitive), or None."""
    return _OBJECTS_LOWER.get(name.lower())


def describe_global_entry(sobject: SObject, version: str) -> dict[str, Any]:
    """The object's entry in ``/sobjects/`` (and ``objectDescribe`` of ``/sobjects/{type}/``)."""
    base = f"/services/data/v{version}/sobjects/{sobject.name}"
    return {
        "name": sobject.name,
        "label": sobject.name,
        "labelPlural": sobject.label_plural,
        "keyPrefix": sobject.key_prefix,
        "custom": False,
        "createable": True,
        "updateable": True,
        "deletable": True,
        "queryable": True,
        "replicateable": True,
        "urls": {
            "sobject": base,
            "describe": f"{base}/describe",
            "rowTemplate": f"{base}/{{ID}}",
        },
    }


def describe(sobject: SObject, version: str) -> dict[str, Any]:
    """The full ``/sobjects/{type}/describe/`` result."""
    result = describe_global_entry(sobject, version)
    result["fields"] = [f.describe() for f in sobject.fields.values()]
    return result
