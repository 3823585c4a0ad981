"""Generate customer CSVs with known duplicates, and the summary they must produce."""

from __future__ import annotations

import csv
import io
import random
from collections import Counter
from dataclasses import dataclass

COUNTRIES = ("DE", "FR", "GB", "US", "JP", "BR", "IN", "NG", "CA", "ES")


@dataclass(frozen=True)
class CustomerFile:
    """A CSV of customer records and the numbers a correct report gives for it."""

    data: bytes
    rows: int
    customers: int
    duplicates: int
    countries: Counter[str]


def customer_csv(rows: int, *, duplicate_share: float = 0.2, seed: int = 7) -> CustomerFile:
    """Return a CSV of ``rows`` records where about ``duplicate_share`` repeat an earlier e-mail."""
    rng = random.Random(seed)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "name", "email", "country"])
    emails: list[str] = []
    countries: Counter[str] = Counter()
    duplicates = 0
    for n in range(rows):
        if emails and rng.random() < duplicate_share:
            # The same address again, differently written: case and spaces do not make a new customer.
            email = rng.choice(emails)
            written = f"  {email.upper()} " if rng.random() < 0.5 else email
            country = rng.choice(COUNTRIES)  # the first record of an address decides its country
            duplicates += 1
        else:
            email = f"customer{n}@example.com"
            written = email
            country = rng.choice(COUNTRIES)
            emails.append(email)
            countries[country] += 1
        writer.writerow([n, f"Customer, {n}", written, country])
    return CustomerFile(out.getvalue().encode(), rows, len(emails), duplicates, countries)
