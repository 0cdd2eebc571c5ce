"""Deterministic synthetic records: the same org name and count always give the same data."""

from __future__ import annotations

import random
from typing import Any

from emulator.store import Store

__all__ = ["SEED_SPAN_SECONDS", "seed_store"]

# Seeded records are spread over the 29 days before start, inside the 30 days `updated/` may look back.
SEED_SPAN_SECONDS = 29 * 86400

_FIRST = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Ken", "Frances", "Linus")
_LAST = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Hamilton", "Thompson", "Allen")
_COMPANIES = ("Initech", "Globex", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne", "Acme", "Tyrell")
_CITIES = ("Paris", "Lyon", "Berlin", "Madrid", "Austin", "Boston", "Osaka", "Lisbon")
_INDUSTRIES = ("Banking", "Education", "Energy", "Healthcare", "Retail", "Technology")


def _person(rng: random.Random, i: int, domain: str) -> dict[str, Any]:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    return {"FirstName": first, "LastName": last, "Email": f"{first}.{last}.{i}@{domain}".lower(),
            "Phone": f"+1 555 {rng.randrange(1000, 9999)}"}


def _bodies(org: str, kind: str, i: int, rng: random.Random, accounts: list[str]) -> dict[str, Any]:
    account = accounts[i % len(accounts)] if accounts else None
    ext = f"{kind.upper()}-{i:06d}"
    if kind == "Account":
        company = f"{rng.choice(_COMPANIES)} {i}"
        return {"Name": company, "Industry": rng.choice(_INDUSTRIES), "Type": "Customer - Direct",
                "NumberOfEmployees": rng.randrange(5, 5000), "BillingCity": rng.choice(_CITIES),
                "Website": f"https://{company.split(maxsplit=1)[0].lower()}{i}.example.com", "External_Id__c": ext}
    if kind == "Lead":
        return {**_person(rng, i, f"{org}-leads.example.com"), "Company": f"{rng.choice(_COMPANIES)} {i}",
                "LeadSource": "Web", "Industry": rng.choice(_INDUSTRIES), "City": rng.choice(_CITIES),
                "AnnualRevenue": float(rng.randrange(10, 900) * 1000), "External_Id__c": ext}
    if kind == "Contact":
        return {**_person(rng, i, f"{org}-contacts.example.com"), "AccountId": account,
                "Title": "Engineer", "MailingCity": rng.choice(_CITIES), "External_Id__c": ext}
    if kind == "Opportunity":
        return {"Name": f"Deal {i}", "AccountId": account, "StageName": "Prospecting",
                "CloseDate": f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}",
                "Amount": float(rng.randrange(1, 500) * 100), "Probability": 10.0, "External_Id__c": ext}
    if kind == "Campaign":
        return {"Name": f"Campaign {i}", "Type": "Webinar", "IsActive": i % 2 == 0,
                "BudgetedCost": float(rng.randrange(1, 50) * 1000), "External_Id__c": ext}
    return {"Subject": f"Case {i}: cannot log in", "Origin": "Web", "AccountId": account,
            "Priority": rng.choice(("High", "Medium", "Low")), "External_Id__c": ext}


def seed_store(store: Store, org: str, per_object: int, now: float) -> None:
    """Insert ``per_object`` records of each object, backdated and spread over the last 29 days."""
    accounts: list[str] = []
    for kind in ("Account", "Campaign", "Lead", "Contact", "Opportunity", "Case"):
        rng = random.Random(f"{org}:{kind}")
        for i in range(per_object):
            at = now - SEED_SPAN_SECONDS * (per_object - i) / per_object
            record_id = store.create(kind, _bodies(org, kind, i, rng, accounts), at=round(at, 3))
            if kind == "Account":
                accounts.append(record_id)
