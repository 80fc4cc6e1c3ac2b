"""compose/docker-compose.yml, checked without Docker: the Compose specification's schema (vendored by
check-jsonschema) and what matters to users."""

import json
import re
from pathlib import Path

import check_jsonschema
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
    named = set(re.findall(r"^\| `([a-z0-9-]+)` \|", section, flags=re.M))
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
    assert COMPOSE["services"]["redis"]["profiles"] == ["celery"]
    assert COMPOSE["services"]["airflow-worker"]["profiles"] == ["celery"]


def test_services_wait_for_what_they_need() -> None:
    services = COMPOSE["services"]
    assert services["airflow-apiserver"]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    assert services["airflow-scheduler"]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"
    for name in ("airflow-db", "source-db", "warehouse-db", "minio", "airflow-apiserver"):
        assert "healthcheck" in services[name], name
