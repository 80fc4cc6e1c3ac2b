"""The integration suite's fixtures live in tests/conftest.py (shared with the fault suite); ``loads``
(one table load through each Postgres shape) in tests/integration/loads.py."""

from tests.conftest import REPO_ROOT, SEED_DIR, Sandbox, table_fingerprint
from tests.integration.loads import loads

__all__ = ["REPO_ROOT", "SEED_DIR", "Sandbox", "loads", "table_fingerprint"]
