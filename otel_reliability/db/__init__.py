"""Database helpers: transaction retries (``run_in_transaction``) and the statement-timeout check.

Imports nothing optional at import time; SQLAlchemy is imported where it is used.
"""
