"""compose/connections.example.yaml and compose/.env.example define the same connections, and every
connection an example pipeline uses."""

import json
from pathlib import Path

import yaml
from airflow.models.connection import Connection

from dagforge.catalog import build_catalog

COMPOSE = Path(__file__).resolve().parents[2] / "compose"


def env_connections() -> dict[str, Connection]:
    found = {}
    for line in (COMPOSE / ".env.example").read_text().splitlines():
        if line.startswith("AIRFLOW_CONN_"):
            name, _, value = line.partition("=")
            conn_id = name.removeprefix("AIRFLOW_CONN_").lower()
            is_json = value.startswith("{")
            found[conn_id] = Connection.from_json(value, conn_id=conn_id) if is_json else Connection(conn_id, uri=value)
    return found


def used_connections() -> set[str]:
    return set().union(*(entry.pipeline.connections for entry in build_catalog([COMPOSE.parent / "pipelines"])))


def test_both_files_define_the_same_connections_and_all_used_ones() -> None:
    imported = yaml.safe_load((COMPOSE / "connections.example.yaml").read_text())
    from_env = env_connections()
    assert set(imported) == set(from_env)
    assert used_connections() <= set(imported)
    for conn_id, fields in imported.items():
        conn = from_env[conn_id]
        assert conn.conn_type == fields["conn_type"], conn_id
        assert (conn.host or None) == fields.get("host"), conn_id
        assert conn.password == fields.get("password"), conn_id
        if "extra" in fields:
            assert json.loads(conn.extra) == fields["extra"], conn_id
