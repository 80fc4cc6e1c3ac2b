"""The integration suite's fixtures live in tests/conftest.py (shared with the fault suite)."""

from tests.conftest import REPO_ROOT, SEED_DIR, Sandbox, table_fingerprint

__all__ = ["REPO_ROOT", "SEED_DIR", "Sandbox", "table_fingerprint"]
