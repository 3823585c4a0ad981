"""Test support shared by tests/ and bench/: real servers on loopback, a web client, SMTP, sample data."""
