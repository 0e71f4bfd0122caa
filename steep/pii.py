"""Patterns of personal data that should not sit in training data or logs.

Kept apart from the Great Expectations suites so that the serving image can flag PII without importing GX.
"""

EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"
PHONE = r"(?:\+?\d{1,3}[\s.-]?)?(?:\(\d{3}\)|\d{3})[\s.-]?\d{3}[\s.-]?\d{4}\b"
