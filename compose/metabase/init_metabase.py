"""Metabase's first start in the compose stack (profile ``bi``); the ``metabase-init`` service runs it every time
the stack comes up, and a second run changes nothing.

Metabase's open-source edition takes neither its admin nor a data source from a file (its config file is a paid
feature), so this calls its REST API:

1. ``GET /api/session/properties``. Without a user yet, ``POST /api/setup`` with the setup token creates the admin
   (``METABASE_ADMIN_EMAIL`` / ``METABASE_ADMIN_PASSWORD``, compose/.env.example) and anonymous tracking is turned
   off; with one, it logs in as that admin (``POST /api/session``).
2. ``GET /api/database``. Unless a database named ``METABASE_WAREHOUSE_NAME`` is there, ``POST /api/database``
   registers ``WAREHOUSE_URL`` (``postgres://user:password@host:port/dbname``) as a PostgreSQL data source; Metabase
   checks the connection and syncs the tables.

Only the standard library: it runs with the Python of the stack's Airflow image.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit


def warehouse_database(url: str, name: str) -> dict[str, Any]:
    """The ``POST /api/database`` body for a ``postgres://user:password@host:port/dbname`` URL."""
    parts = urlsplit(url)
    dbname = unquote(parts.path.lstrip("/"))
    if parts.scheme not in ("postgres", "postgresql") or not parts.hostname or not dbname:
        raise ValueError(f"not a postgres://user:password@host:port/dbname URL: {url!r}")
    return {
        "engine": "postgres",
        "name": name,
        "details": {
            "host": parts.hostname,
            "port": parts.port or 5432,
            "dbname": dbname,
            "user": unquote(parts.username or ""),
            "password": unquote(parts.password or ""),
            "ssl": False,
        },
    }


class Metabase:
    """JSON calls to one Metabase, with the session of the last sign-in."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.session: str | None = None

    def call(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Content-Type": "application/json"}
        if self.session:
            headers["X-Metabase-Session"] = self.session
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:500]
            raise SystemExit(f"metabase-init: {method} {path}: HTTP {error.code}: {detail}") from None
        return json.loads(raw) if raw.strip() else None


def sign_in(metabase: Metabase, email: str, password: str) -> str:
    """Set up the admin on a new Metabase, else log in as it; says which."""
    properties = metabase.call("GET", "/api/session/properties")
    if properties.get("has-user-setup"):
        metabase.session = metabase.call("POST", "/api/session", {"username": email, "password": password})["id"]
        return f"signed in as {email}"
    setup = {
        "token": properties["setup-token"],
        "user": {"email": email, "password": password, "first_name": "Admin", "last_name": "User"},
        "prefs": {"site_name": "dagforge", "allow_tracking": False},
    }
    metabase.session = metabase.call("POST", "/api/setup", setup)["id"]
    metabase.call("PUT", "/api/setting/anon-tracking-enabled", {"value": False})
    return f"created the admin {email}"


def database_names(metabase: Metabase) -> set[str]:
    found = metabase.call("GET", "/api/database")
    return {db["name"] for db in (found["data"] if isinstance(found, dict) else found)}


def main(env: Mapping[str, str] = os.environ) -> int:
    metabase = Metabase(env.get("METABASE_URL", "http://metabase:3000"))
    database = warehouse_database(env["WAREHOUSE_URL"], env.get("METABASE_WAREHOUSE_NAME", "warehouse"))
    print(f"metabase-init: {sign_in(metabase, env['METABASE_ADMIN_EMAIL'], env['METABASE_ADMIN_PASSWORD'])}")
    if database["name"] in database_names(metabase):
        print(f"metabase-init: the data source {database['name']!r} is already there")
        return 0
    created = metabase.call("POST", "/api/database", database)
    details = database["details"]
    print(
        f"metabase-init: registered {details['host']}:{details['port']}/{details['dbname']} "
        f"as the data source {database['name']!r} (id {created['id']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
