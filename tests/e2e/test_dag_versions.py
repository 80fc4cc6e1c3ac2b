"""Airflow 3 stores a new DAG version whenever a DAG's serialized form changes, so the loader must
serialize the same files to the same DAGs in any process: another ``PYTHONHASHSEED``, another
working directory, stand-ins (broken pipelines) included; and editing one YAML file must give a new
version of that DAG only.

Each test has its own AIRFLOW_HOME with a sqlite metadata DB, the repo's ``dags/`` and a copy of
``pipelines/`` plus one broken file, and runs ``airflow dags reserialize`` in subprocesses. Two
details of Airflow's ``SerializedDagModel.write_dag`` decide how: a write within
``min_serialized_dag_update_interval`` (30 s) of the last one is skipped (set to 0 here, or the
second reserialize would compare nothing), and a changed DAG whose latest version has no task
instances is overwritten in place under the same version number. So after the first reserialize
every DAG gets a queued run (task instances on version 1, as in production once a DAG has run),
and the tests compare ``dag_hash`` as well as count versions."""

from __future__ import annotations

import difflib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import zlib
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STANDIN = "broken_orders"
BROKEN = (
    f"pipeline: {STANDIN}\nsource: {{kind: postgres, connection: sales_src}}\n"
    "destination: {kind: postgres, connection: sales_dwh}\ntables:\n  - name: orders\n    mode: incremental\n"
)  # incremental without a cursor or key: invalid, so the loader builds a stand-in
EDITED, OLD_DESCRIPTION = "sales_pg_to_pg", "description: Sales transactions and customers from the shop database"
NEW_DESCRIPTION = "Sales and customers from the shop, edited by a test"
PIN_VERSIONS = """
from sqlalchemy import select
from airflow.api.common.trigger_dag import trigger_dag
from airflow.models.dag import DagModel
from airflow.utils.session import create_session
from airflow.utils.types import DagRunTriggeredByType

with create_session() as session:
    dag_ids = session.scalars(select(DagModel.dag_id)).all()
for dag_id in dag_ids:  # a queued run: task instances on the latest version, so a change adds a version
    trigger_dag(dag_id, triggered_by=DagRunTriggeredByType.TEST, run_id="pin_versions")
"""


@dataclass
class Version:
    number: int
    dag_hash: str
    data: dict[str, Any] = field(repr=False)


@dataclass
class Snapshot:
    """What the metadata DB holds after a reserialize."""

    versions: dict[str, list[Version]]
    parsed: dict[str, str]
    import_errors: list[tuple[str, str]]
    pinned: set[str]

    def latest(self, dag_id: str) -> Version:
        return self.versions[dag_id][-1]


class AirflowHome:
    """A private Airflow: sqlite metadata DB, the repo's ``dags/``, a copy of ``pipelines/`` with a broken file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "airflow"
        self.home.mkdir()
        self.db = self.home / "airflow.db"
        self.pipelines = root / "pipelines"
        shutil.copytree(REPO / "pipelines", self.pipelines)
        (self.pipelines / f"{STANDIN}.yml").write_text(BROKEN, encoding="utf-8")

    def env(self, seed: int, plan_cache: str | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "DAGFORGE_"))}
        if plan_cache is not None:
            env["DAGFORGE_PLAN_CACHE"] = plan_cache
        env.update(
            AIRFLOW_HOME=str(self.home),
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{self.db}",
            AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__DAG_FACTORY__ENABLE_TELEMETRY="False",
            AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL="0",
            AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT="120",  # a busy 2-core machine must not turn a parse into an error
            DAGFORGE_PIPELINES_DIR=str(self.pipelines),
            PYTHONHASHSEED=str(seed),
        )
        return env

    def run(self, args: list[str], cwd: Path, seed: int = 0, plan_cache: str | None = None) -> None:
        env = self.env(seed, plan_cache)
        done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (
            f"{' '.join(args[:3])} (cwd {cwd}) exited {done.returncode}:\n{done.stderr[-4000:]}\n{done.stdout[-2000:]}"
        )

    def migrate(self) -> None:
        self.run([str(BIN / "airflow"), "db", "migrate"], self.root)

    def reserialize(self, cwd: Path, seed: int, plan_cache: str | None = None) -> Snapshot:
        """``plan_cache``: ``off``, or None for the loader's default (a plan cache under AIRFLOW_HOME)."""
        self.run([str(BIN / "airflow"), "dags", "reserialize", "--bundle-name", "dags-folder"], cwd, seed, plan_cache)
        return self.snapshot()

    def pin_versions(self) -> None:
        self.run([sys.executable, "-c", PIN_VERSIONS], self.root)

    def snapshot(self) -> Snapshot:
        with closing(sqlite3.connect(self.db)) as conn:
            rows = conn.execute(
                "SELECT v.dag_id, v.version_number, s.dag_hash, s.data, s.data_compressed FROM dag_version v "
                "JOIN serialized_dag s ON s.dag_version_id = v.id ORDER BY v.dag_id, v.version_number"
            ).fetchall()
            parsed = dict(conn.execute("SELECT dag_id, last_parsed_time FROM dag").fetchall())
            errors = conn.execute("SELECT filename, stacktrace FROM import_error").fetchall()
            pinned = {row[0] for row in conn.execute("SELECT DISTINCT dag_id FROM task_instance")}
        versions: dict[str, list[Version]] = {}
        for dag_id, number, dag_hash, data, compressed in rows:
            text = data if data is not None else zlib.decompress(compressed).decode("utf-8")
            versions.setdefault(dag_id, []).append(Version(number, dag_hash, json.loads(text)))
        return Snapshot(versions, parsed, errors, pinned)


@pytest.fixture
def airflow_home(tmp_path: Path) -> AirflowHome:
    home = AirflowHome(tmp_path)
    home.migrate()
    return home


def example_dag_ids() -> set[str]:
    """The DAG ids of the repo's examples, read from the YAML directly (not through dagforge)."""
    files = (p for p in (REPO / "pipelines").glob("*.yml") if p.name != "defaults.yml")
    return {yaml.safe_load(p.read_text(encoding="utf-8"))["pipeline"] for p in files}


def assert_all_dags_serialized(snapshot: Snapshot) -> None:
    assert set(snapshot.versions) == example_dag_ids() | {STANDIN}
    assert not snapshot.import_errors, snapshot.import_errors
    for dag_id in snapshot.versions:
        assert ("invalid" in snapshot.latest(dag_id).data["dag"]["tags"]) == (dag_id == STANDIN), dag_id


def assert_unchanged(before: Snapshot, after: Snapshot, skip: tuple[str, ...] = ()) -> None:
    """Every DAG (but ``skip``) has one version and the hash it had ``before``; else say what changed."""
    assert before.pinned >= set(before.versions) - set(skip), "every DAG's version 1 must hold task instances"
    assert all(after.parsed[d] > before.parsed[d] for d in before.parsed), (
        "the later reserialize did not sync every DAG"
    )
    problems = []
    for dag_id in sorted(set(before.versions) - set(skip)):
        old, versions = before.latest(dag_id), after.versions[dag_id]
        if [v.number for v in versions] == [1] and versions[0].dag_hash == old.dag_hash:
            continue
        new = versions[-1]
        changes = json_diff(old.data, new.data) or ["(no difference in the JSON; only the hash)"]
        problems.append(
            f"{dag_id}: versions {[v.number for v in versions]}, dag_hash {old.dag_hash} -> {new.dag_hash}; "
            f"changed:\n  " + "\n  ".join(changes[:60])
        )
    assert not problems, "DAGs serialized differently by another process:\n" + "\n".join(problems)


def test_the_same_files_give_one_version_per_dag_in_any_process(airflow_home: AirflowHome) -> None:
    """Three processes, three hash seeds, three cwds (pipelines/ below the first, the folder itself,
    unrelated), compiled without the plan cache, compiled into a cold cache, served from the warm one."""
    elsewhere = airflow_home.root / "elsewhere"
    elsewhere.mkdir()

    first = airflow_home.reserialize(cwd=airflow_home.root, seed=1, plan_cache="off")
    assert_all_dags_serialized(first)
    airflow_home.pin_versions()
    first = airflow_home.snapshot()
    second = airflow_home.reserialize(cwd=elsewhere, seed=2)
    third = airflow_home.reserialize(cwd=airflow_home.pipelines, seed=3)

    for later in (second, third):
        assert_all_dags_serialized(later)
        assert_unchanged(first, later)


def test_editing_one_file_gives_a_new_version_of_that_dag_only(airflow_home: AirflowHome) -> None:
    """The same cwd both times (the other test covers cwds), different hash seeds; the edited file
    misses the plan cache the first run filled, the others hit it."""
    airflow_home.reserialize(cwd=airflow_home.root, seed=4)
    airflow_home.pin_versions()
    before = airflow_home.snapshot()
    path = airflow_home.pipelines / f"{EDITED}.yml"
    text = path.read_text(encoding="utf-8")
    (line,) = [line for line in text.splitlines() if line.startswith(OLD_DESCRIPTION)]
    path.write_text(text.replace(line, f"description: {NEW_DESCRIPTION}"), encoding="utf-8")

    after = airflow_home.reserialize(cwd=airflow_home.root, seed=5)

    assert_all_dags_serialized(after)
    edited = after.versions[EDITED]
    assert [v.number for v in edited] == [1, 2]
    assert edited[0].dag_hash == before.latest(EDITED).dag_hash
    assert edited[1].data["dag"]["description"] == NEW_DESCRIPTION
    assert "dag.description" in {change.split(":")[0] for change in json_diff(edited[0].data, edited[1].data)}
    assert_unchanged(before, after, skip=(EDITED,))


# ---- a readable difference between two serialized DAGs ----


def json_diff(old: Any, new: Any, path: str = "") -> list[str]:
    """One line per differing leaf (``dag.doc_md: ...``); tasks keyed by task id, texts as line diffs."""
    if isinstance(old, dict) and isinstance(new, dict):
        changes = []
        for key in sorted(old.keys() | new.keys(), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in old:
                changes.append(f"{where}: added {_short(new[key])}")
            elif key not in new:
                changes.append(f"{where}: removed {_short(old[key])}")
            else:
                changes.extend(json_diff(old[key], new[key], where))
        return changes
    if isinstance(old, list) and isinstance(new, list):
        if _tasks(old) and _tasks(new):
            return json_diff(_by_task_id(old), _by_task_id(new), path)
        if len(old) == len(new):
            return [c for i, (a, b) in enumerate(zip(old, new, strict=True)) for c in json_diff(a, b, f"{path}[{i}]")]
    if old == new:
        return []
    if isinstance(old, str) and isinstance(new, str) and "\n" in old + new:
        lines = list(difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0))[2:]
        return [f"{path}: text changed", *(f"    {_short(line)}" for line in lines[:20])]
    return [f"{path}: {_short(old)} -> {_short(new)}"]


def _tasks(items: list) -> bool:
    return bool(items) and all(isinstance(i, dict) and "task_id" in i.get("__var", {}) for i in items)


def _by_task_id(items: list[dict]) -> dict[str, dict]:
    return {i["__var"]["task_id"]: i for i in items}


def _short(value: Any, limit: int = 240) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} chars)"
