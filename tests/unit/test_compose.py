"""compose/docker-compose.yml, checked without Docker: the Compose specification's schema (vendored by
check-jsonschema) and what matters to users."""

import importlib.util
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

import check_jsonschema
import email_validator
import jsonschema
import yaml

from dagforge.catalog import build_catalog

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "compose"
COMPOSE = yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text())
AIRFLOW_SERVICES = (
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
)


def test_valid_against_the_compose_specification() -> None:
    schema_path = Path(check_jsonschema.__file__).parent / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema = json.loads(schema_path.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(COMPOSE)]
    assert errors == []


def test_every_service_the_readme_names_exists() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Docker Compose", 1)[1].split("\n## ", 1)[0]
    services_table = section.split("| service | what it is |", 1)[1].split("\n\n", 1)[0]
    named = set(re.findall(r"^\| `([a-z0-9-]+)` \|", services_table, flags=re.M))
    assert len(named) >= 10
    assert named == set(COMPOSE["services"])


def test_every_mounted_path_exists_in_the_repository() -> None:
    for name, service in COMPOSE["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (COMPOSE_DIR / source).exists(), f"{name}: {source}"
    mounted = {v.split(":")[1] for v in COMPOSE["services"]["airflow-scheduler"]["volumes"]}
    assert {f"/opt/airflow/{d}" for d in ("dags", "pipelines", "operators", "dagforge", "schemas")} <= mounted


def test_airflow_services_get_every_connection_the_pipelines_use() -> None:
    env_names = {
        line.split("=", 1)[0].removeprefix("AIRFLOW_CONN_").lower()
        for line in (COMPOSE_DIR / ".env.example").read_text().splitlines()
        if line.startswith("AIRFLOW_CONN_")
    }
    used = set().union(*(entry.pipeline.connections for entry in build_catalog([REPO / "pipelines"])))
    assert "slack_alerts" in used and used <= env_names
    for name in AIRFLOW_SERVICES:
        service = COMPOSE["services"][name]
        assert service["env_file"] == ".env.example", name
        assert service["environment"]["AIRFLOW__DAG_FACTORY__ENABLE_TELEMETRY"] == "False", name


def test_images_are_pinned_and_the_port_is_configurable() -> None:
    for name, service in COMPOSE["services"].items():
        image = service.get("image", "")
        tag = image.rsplit(":", 1)[1] if ":" in image else ""
        assert re.search(r"\d", tag) and tag != "latest", f"{name}: {image!r} is not pinned"
    assert (COMPOSE_DIR / "Dockerfile").read_text().count("FROM apache/airflow:3.3.2-python3.11") == 1
    assert COMPOSE["services"]["airflow-apiserver"]["ports"] == ["${AIRFLOW_PORT:-8080}:8080"]
    for name in ("redis", "airflow-worker", "flower"):
        assert COMPOSE["services"][name]["profiles"] == ["celery"], name


def test_services_wait_for_what_they_need() -> None:
    services = COMPOSE["services"]
    assert services["airflow-apiserver"]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    assert services["airflow-scheduler"]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"
    for name in ("airflow-db", "source-db", "warehouse-db", "minio", "airflow-apiserver"):
        assert "healthcheck" in services[name], name
    for name in ("flower", "metabase-db", "metabase", "pgadmin"):
        assert "healthcheck" in services[name], name


# --- profiles, cross-references and the tools beside Airflow (Flower, Metabase, pgAdmin) ---

SERVICES = COMPOSE["services"]
ENV_EXAMPLE = dict(
    line.split("=", 1)
    for line in (COMPOSE_DIR / ".env.example").read_text().splitlines()
    if line and not line.startswith("#")
)
PROFILES = {
    "redis": ["celery"],
    "airflow-worker": ["celery"],
    "flower": ["celery"],
    "metabase-db": ["bi"],
    "metabase": ["bi"],
    "metabase-init": ["bi"],
    "pgadmin": ["admin"],
}
# the UIs a user opens: published port (host side configurable), container port, and the health check reaches it
UI_PORTS = {
    "airflow-apiserver": ("AIRFLOW_PORT", 8080, 8080),
    "flower": ("FLOWER_PORT", 5555, 5555),
    "metabase": ("METABASE_PORT", 3000, 3000),
    "pgadmin": ("PGADMIN_PORT", 5050, 80),
}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
INIT_METABASE = COMPOSE_DIR / "metabase" / "init_metabase.py"


def postgres_url(url: str) -> tuple[str, int, str, str, str]:
    parts = urlsplit(url)
    return parts.hostname, parts.port, parts.path.lstrip("/"), parts.username, parts.password


def postgres_service(name: str) -> tuple[str, str, str]:
    env = SERVICES[name]["environment"]
    return env["POSTGRES_DB"], env["POSTGRES_USER"], env["POSTGRES_PASSWORD"]


def test_every_service_is_in_its_profile_and_the_readme_shows_each_profile() -> None:
    for name, service in SERVICES.items():
        assert service.get("profiles", []) == PROFILES.get(name, []), name
    profiles = {p for names in PROFILES.values() for p in names}
    assert profiles == {"celery", "bi", "admin"}
    section = (REPO / "README.md").read_text().split("## Docker Compose", 1)[1].split("\n## ", 1)[0]
    for profile in profiles:
        assert f"--profile {profile} up" in section, profile
    for variable, default, _ in UI_PORTS.values():
        assert f"http://localhost:${{{variable}:-{default}}}" in section, variable


def test_dependencies_exist_wait_on_a_condition_and_come_up_with_the_profile() -> None:
    for name, service in SERVICES.items():
        for target, spec in service.get("depends_on", {}).items():
            assert target in SERVICES, f"{name} -> {target}"
            assert spec["condition"] in CONDITIONS, f"{name} -> {target}"
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[target], f"{name} waits for {target}'s health, which has no check"
            # `--profile X up` must start what a profile-X service waits for, and the default stack nothing profiled
            assert set(SERVICES[target].get("profiles", [])) <= set(service.get("profiles", [])), f"{name} -> {target}"


def test_named_volumes_are_declared_and_used() -> None:
    used = {
        volume.split(":", 1)[0]
        for service in SERVICES.values()
        for volume in service.get("volumes", [])
        if not volume.startswith((".", "/"))
    }
    assert used == set(COMPOSE["volumes"])
    assert {"airflow-db", "metabase-db", "pgadmin"} <= used


def test_the_uis_publish_a_configurable_port_their_health_check_reaches() -> None:
    for name, (variable, default, container) in UI_PORTS.items():
        service = SERVICES[name]
        assert service["ports"] == [f"${{{variable}:-{default}}}:{container}"], name
        check = " ".join(service["healthcheck"]["test"])
        assert re.search(rf"http://(localhost|127\.0\.0\.1):{container}/", check), f"{name}: {check}"


def test_flower_runs_the_workers_image_on_their_broker_behind_a_login_from_env_example() -> None:
    flower, worker = SERVICES["flower"], SERVICES["airflow-worker"]
    assert flower["command"] == "celery flower"
    assert flower["image"] == worker["image"] and flower["build"] == worker["build"]
    assert flower["environment"]["AIRFLOW__CELERY__BROKER_URL"] == worker["environment"]["AIRFLOW__CELERY__BROKER_URL"]
    assert urlsplit(flower["environment"]["AIRFLOW__CELERY__BROKER_URL"]).hostname == "redis"
    assert flower["depends_on"]["redis"]["condition"] == "service_healthy"
    assert flower["healthcheck"]["test"][-1].endswith(":5555/healthcheck")  # Flower's unauthenticated check
    assert flower["env_file"] == ".env.example" and "AIRFLOW__CELERY__FLOWER_BASIC_AUTH" not in flower["environment"]
    assert re.fullmatch(r"[^:,]+:[^:,]+(,[^:,]+:[^:,]+)*", ENV_EXAMPLE["AIRFLOW__CELERY__FLOWER_BASIC_AUTH"])


def test_pgadmin_registers_the_source_and_the_warehouse_with_their_passwords() -> None:
    pgadmin = SERVICES["pgadmin"]
    env = pgadmin["environment"]
    mounts = dict(reversed(v.split(":")[:2]) for v in pgadmin["volumes"])
    servers = json.loads((COMPOSE_DIR / mounts[env["PGADMIN_SERVER_JSON_FILE"]]).read_text())["Servers"]
    assert env["PGADMIN_REPLACE_SERVERS_ON_STARTUP"] == "True"  # servers.json stays the truth at every start
    expected = set()
    for service, conn in (("source-db", "AIRFLOW_CONN_SALES_SRC"), ("warehouse-db", "AIRFLOW_CONN_SALES_DWH")):
        host, port, db, user, password = postgres_url(ENV_EXAMPLE[conn])
        assert host == service and (db, user, password) == postgres_service(service)
        expected.add((host, port, db, user))
    registered = set()
    for key, server in servers.items():
        # what pgAdmin's `setup.py load-servers` refuses a server without
        for attribute in ("Group", "Name", "Port", "Username", "MaintenanceDB", "Host"):
            assert attribute in server, f"{key}: {attribute}"
        assert isinstance(server["Port"], int), key
        assert server["ConnectionParameters"]["passfile"] == "/.pgpass", key  # PGPASS_FILE lands there
        registered.add((server["Host"], server["Port"], server["MaintenanceDB"], server["Username"]))
    assert registered == expected
    pgpass = [
        line.split(":")
        for line in (COMPOSE_DIR / mounts[env["PGPASS_FILE"]]).read_text().splitlines()
        if line and not line.startswith("#")
    ]
    for host, port, _db, user in expected:
        password = postgres_service(host)[2]
        assert [host, str(port), "*", user, password] in pgpass, host
    for service in ("source-db", "warehouse-db"):
        assert pgadmin["depends_on"][service]["condition"] == "service_healthy"


def test_pgadmin_logs_in_with_what_env_example_gives() -> None:
    pgadmin = SERVICES["pgadmin"]
    assert pgadmin["image"].startswith("dpage/pgadmin4:")
    assert pgadmin["env_file"] == ".env.example"
    assert not {"PGADMIN_DEFAULT_EMAIL", "PGADMIN_DEFAULT_PASSWORD"} & set(pgadmin["environment"])
    # the container's entrypoint refuses an address email_validator refuses, pgAdmin a password under 6 characters
    email_validator.validate_email(ENV_EXAMPLE["PGADMIN_DEFAULT_EMAIL"], check_deliverability=False)
    assert len(ENV_EXAMPLE["PGADMIN_DEFAULT_PASSWORD"]) >= 6
    assert "pgadmin:/var/lib/pgadmin" in pgadmin["volumes"]


def test_metabase_keeps_its_own_database_and_points_at_the_warehouse() -> None:
    metabase, init = SERVICES["metabase"], SERVICES["metabase-init"]
    env = metabase["environment"]
    assert metabase["image"].startswith("metabase/metabase:v0.")  # the open-source edition
    assert (env["MB_DB_TYPE"], env["MB_DB_HOST"], env["MB_DB_PORT"]) == ("postgres", "metabase-db", "5432")
    assert (env["MB_DB_DBNAME"], env["MB_DB_USER"], env["MB_DB_PASS"]) == postgres_service("metabase-db")
    assert metabase["depends_on"]["metabase-db"]["condition"] == "service_healthy"
    assert "metabase-db:/var/lib/postgresql/data" in SERVICES["metabase-db"]["volumes"]
    # metabase-init registers the warehouse Airflow loads, once Metabase and the warehouse are healthy
    init_env = init["environment"]
    host, port, db, user, password = postgres_url(init_env["WAREHOUSE_URL"])
    assert (host, port) == ("warehouse-db", 5432) and (db, user, password) == postgres_service("warehouse-db")
    assert init_env["WAREHOUSE_URL"] == ENV_EXAMPLE["AIRFLOW_CONN_SALES_DWH"]
    metabase_url = urlsplit(init_env["METABASE_URL"])
    assert (metabase_url.hostname, metabase_url.port) == ("metabase", UI_PORTS["metabase"][2])
    assert {t: d["condition"] for t, d in init["depends_on"].items()} == {
        "metabase": "service_healthy",
        "warehouse-db": "service_healthy",
    }
    source, target = init["volumes"][0].split(":")[:2]
    assert init["entrypoint"] == ["python", f"{target}/{INIT_METABASE.name}"]
    assert (COMPOSE_DIR / source / INIT_METABASE.name).is_file()
    # the admin from .env.example, which Metabase's default password rules (6 characters, a digit) accept
    assert init["env_file"] == ".env.example"
    email_validator.validate_email(ENV_EXAMPLE["METABASE_ADMIN_EMAIL"], check_deliverability=False)
    assert re.fullmatch(r"(?=.*\d).{6,}", ENV_EXAMPLE["METABASE_ADMIN_PASSWORD"])


class FakeMetabase(BaseHTTPRequestHandler):
    """The few endpoints init_metabase.py calls, as Metabase answers them."""

    state: ClassVar[dict] = {}

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, status: int, body: object) -> None:
        raw = b"" if status == 204 else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _signed_in(self) -> bool:
        return self.headers.get("X-Metabase-Session") in self.state["sessions"]

    def do_GET(self) -> None:
        if self.path == "/api/session/properties":
            self._answer(200, {"has-user-setup": bool(self.state["users"]), "setup-token": self.state["token"]})
        elif self.path == "/api/database" and self._signed_in():
            self._answer(200, {"data": self.state["databases"], "total": len(self.state["databases"])})
        else:
            self._answer(401, "Unauthenticated")

    def do_PUT(self) -> None:
        self.do_POST()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.state["calls"].append((self.command, self.path, body))
        if self.path == "/api/setup" and body["token"] == self.state["token"] and not self.state["users"]:
            self.state["users"][body["user"]["email"]] = body["user"]["password"]
            self._answer(200, {"id": self._new_session()})
        elif self.path == "/api/session" and self.state["users"].get(body["username"]) == body["password"]:
            self._answer(200, {"id": self._new_session()})
        elif self.path == "/api/setting/anon-tracking-enabled" and self._signed_in():
            self._answer(204, None)
        elif self.path == "/api/database" and self._signed_in():
            self.state["databases"].append({"id": len(self.state["databases"]) + 1, **body})
            self._answer(200, self.state["databases"][-1])
        else:
            self._answer(403, "refused")

    def _new_session(self) -> str:
        self.state["sessions"].add(session := f"session-{len(self.state['sessions'])}")
        return session


def test_init_metabase_sets_up_the_admin_and_the_warehouse_once(capsys) -> None:
    spec = importlib.util.spec_from_file_location("init_metabase", INIT_METABASE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    FakeMetabase.state = {"token": "setup-token-1", "users": {}, "sessions": set(), "databases": [], "calls": []}
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeMetabase)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    env = {
        **SERVICES["metabase-init"]["environment"],
        "METABASE_URL": f"http://127.0.0.1:{server.server_port}",
        "METABASE_ADMIN_EMAIL": ENV_EXAMPLE["METABASE_ADMIN_EMAIL"],
        "METABASE_ADMIN_PASSWORD": ENV_EXAMPLE["METABASE_ADMIN_PASSWORD"],
    }
    try:
        assert module.main(env) == 0
        assert module.main(env) == 0  # a second `up`: signs in, finds the warehouse, adds nothing
    finally:
        server.shutdown()
        server.server_close()
    calls = FakeMetabase.state["calls"]
    assert [(method, path) for method, path, _ in calls] == [
        ("POST", "/api/setup"),
        ("PUT", "/api/setting/anon-tracking-enabled"),
        ("POST", "/api/database"),
        ("POST", "/api/session"),
    ]
    assert calls[0][2]["user"]["email"] == ENV_EXAMPLE["METABASE_ADMIN_EMAIL"]
    assert calls[1][2] == {"value": False}
    db, user, password = postgres_service("warehouse-db")
    assert calls[2][2] == {
        "engine": "postgres",
        "name": "warehouse",
        "details": {
            "host": "warehouse-db",
            "port": 5432,
            "dbname": db,
            "user": user,
            "password": password,
            "ssl": False,
        },
    }
    out = capsys.readouterr().out
    assert "created the admin" in out and "signed in as" in out and "is already there" in out
