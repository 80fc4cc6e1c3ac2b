"""How long Airflow takes to parse dagforge's one loader file as the pipelines folder grows (issue 13).

Makes N pipeline files from the examples (every copying shape, each with its tables and
transforms, ids and buckets made unique) in a temporary folder, then measures, each in a fresh
interpreter (as a dag-processor or a worker starts one):

* ``folder_s``: a ``DagBag`` of ``dags/`` (the whole-folder parse the dag-processor does) with an
  empty plan cache, not counting ``import airflow`` (``airflow_import_s``, reported beside it);
  ``folder_warm_s`` the next parse, plans from the cache;
* ``one_dag_s``: the same file with the parsing context set to one DAG and task, as a worker parses
  before each task (``_AIRFLOW_PARSING_CONTEXT_DAG_ID``/``TASK_ID``), warm cache;
  ``one_dag_no_cache_s`` with ``DAGFORGE_PLAN_CACHE=off``;
* above ``--shards-per`` pipelines, the folder split over ``ceil(n / shards-per)`` loader files
  (``pipelines_shard_<i>_of_<k>.py``), each parsed alone: ``shard_max_s`` is the slowest file;
* ``validate_s``: ``dagforge validate`` of the folder (no Airflow);
* ``dagfactory_s``: the peer, plain dag-factory ``load_yaml_dags`` over the ``dagforge render``
  output of the same pipelines (the same DAGs and operators), not counting ``import airflow``;
* ``rss_mb``: the whole-folder parse's peak RSS (the bench's own process stays small: Linux counts
  a parent's RSS at fork into a child's peak).

Last line: ``parse n=… folder_s=… one_dag_s=… dagfactory_s=… ratio=… rss_mb=…`` with
``ratio = dagfactory_s / folder_s`` (above 1: dagforge parses faster than plain dag-factory).
Usage: ``python bench/parse.py --n 100 1000``. Figures and what they mean: bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
EXAMPLES = ("sales_pg_to_pg", "flights_to_dwh", "olist_to_bigquery", "library_to_dwh", "library_to_bigquery")
"""Every copying shape: Postgres → Postgres, → S3 → Postgres (+ SQL transforms), → GCS → BigQuery."""

CHILD = r"""
import json, os, resource, sys, time
started = time.perf_counter()
import airflow  # noqa: F401
from airflow.dag_processing.dagbag import DagBag
imported = time.perf_counter()
{work}
print(json.dumps({{"airflow_import_s": imported - started, "work_s": time.perf_counter() - imported,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **result}}))
"""
DAGBAG = """
bag = DagBag(dag_folder={dags!r})
result = {{"dags": len(bag.dags), "errors": len(bag.import_errors)}}
"""
DAGFACTORY = """
sys.path.insert(0, {repo!r})
from dagfactory import load_yaml_dags
built = {{}}
load_yaml_dags(built, dags_folder={folder!r}, suffix=[".yml"], defaults_config_path={folder!r})
result = {{"dags": sum(1 for v in built.values() if v.__class__.__name__ == "DAG"), "errors": 0}}
"""


def make_pipelines(folder: Path, n: int) -> list[str]:
    """``n`` pipeline files from the examples, round robin; returns their DAG ids."""
    folder.mkdir(parents=True)
    shutil.copytree(REPO / "pipelines" / "transforms", folder / "transforms")
    shutil.copy(REPO / "pipelines" / "defaults.yml", folder / "defaults.yml")
    texts = {name: (REPO / "pipelines" / f"{name}.yml").read_text() for name in EXAMPLES}
    ids = []
    for i in range(n):
        name = EXAMPLES[i % len(EXAMPLES)]
        dag_id = f"{name}_{i:05d}"
        text = re.sub(r"^pipeline: .*$", f"pipeline: {dag_id}", texts[name], count=1, flags=re.M)
        text = re.sub(r"bucket: (\S+)", rf"bucket: \1-{i:05d}", text)
        (folder / f"{dag_id}.yml").write_text(text)
        ids.append(dag_id)
    return ids


def render_folder(pipelines: Path, out: Path) -> None:
    """The dag-factory config of every pipeline, one YAML file each (what ``dagforge render`` prints)."""
    sys.path.insert(0, str(REPO))
    from dagforge.catalog import build_catalog
    from dagforge.cli import render_entry

    out.mkdir(parents=True)
    for entry in build_catalog([pipelines]):
        if entry.config is None:
            raise SystemExit(f"{entry.display} is invalid: {entry.errors}")
        (out / f"{entry.dag_id}.yml").write_text(render_entry(entry))


def in_fresh_python(work: str, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run([PYTHON, "-c", CHILD.format(work=work)], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(n: int, base: Path, shards: int) -> dict[str, Any]:
    pipelines, rendered = base / f"n{n}" / "pipelines", base / f"n{n}" / "rendered"
    ids = make_pipelines(pipelines, n)
    # in a child: a child's peak RSS counts the parent's at fork, so the parent must stay small
    subprocess.run([PYTHON, __file__, "--render", str(pipelines), str(rendered)], check=True)
    cache = base / f"n{n}" / "plan-cache"
    env = {
        **os.environ,
        "DAGFORGE_PIPELINES_DIR": str(pipelines),
        "DAGFORGE_PLAN_CACHE": str(cache),
        "AIRFLOW_HOME": str(base / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DAG_FACTORY__ENABLE_TELEMETRY": "False",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "600",
    }
    dags = str(REPO / "dags")
    cold = in_fresh_python(DAGBAG.format(dags=dags), env)  # an empty plan cache: every file compiled
    warm = in_fresh_python(DAGBAG.format(dags=dags), env)  # the dag-processor's next parse
    one_env = {**env, "_AIRFLOW_PARSING_CONTEXT_DAG_ID": ids[n // 2], "_AIRFLOW_PARSING_CONTEXT_TASK_ID": "x"}
    one = in_fresh_python(DAGBAG.format(dags=dags), one_env)
    one_cold = in_fresh_python(DAGBAG.format(dags=dags), {**one_env, "DAGFORGE_PLAN_CACHE": "off"})
    peer = in_fresh_python(DAGFACTORY.format(repo=str(REPO), folder=str(rendered)), env)
    started = time.perf_counter()
    validate = subprocess.run([PYTHON, "-m", "dagforge.cli", "validate", str(pipelines)], env=env, capture_output=True)
    validate_s = time.perf_counter() - started
    if {cold["dags"], warm["dags"], peer["dags"]} != {n} or one["dags"] != 1 or validate.returncode != 0:
        raise SystemExit(f"n={n}: dagforge built {cold['dags']} DAGs, dag-factory {peer['dags']}; {validate.stderr!r}")
    result = {
        "n": n,
        "folder_s": cold["work_s"],
        "folder_warm_s": warm["work_s"],
        "airflow_import_s": cold["airflow_import_s"],
        "one_dag_s": one["work_s"],
        "one_dag_no_cache_s": one_cold["work_s"],
        "validate_s": validate_s,
        "dagfactory_s": peer["work_s"],
        "ratio": peer["work_s"] / cold["work_s"],
        "rss_mb": max(cold["rss_mb"], warm["rss_mb"]),
        "one_dag_rss_mb": one["rss_mb"],
        "bytecode": _has_bytecode(),
    }
    if shards > 1:
        result.update(measure_shards(env, shards, n))
    return result


def measure_shards(env: dict[str, str], shards: int, n: int) -> dict[str, Any]:
    """The folder split over ``shards`` loader files (pipelines_shard_<i>_of_<k>.py), each parsed alone."""
    with tempfile.TemporaryDirectory(prefix="dagforge-shards-") as tmp:
        for index in range(shards):
            shutil.copy(REPO / "dags" / "pipelines.py", Path(tmp) / f"pipelines_shard_{index}_of_{shards}.py")
        parses = [
            in_fresh_python(DAGBAG.format(dags=str(Path(tmp) / f"pipelines_shard_{i}_of_{shards}.py")), env)
            for i in range(shards)
        ]
    if sum(p["dags"] for p in parses) != n:
        raise SystemExit(f"{shards} shards built {sum(p['dags'] for p in parses)} DAGs, not {n}")
    return {
        "shards": shards,
        "shard_max_s": max(p["work_s"] for p in parses),
        "shard_sum_s": sum(p["work_s"] for p in parses),
        "shard_max_dags": max(p["dags"] for p in parses),
    }


def _has_bytecode() -> bool:
    """Whether the virtualenv holds bytecode (``make install`` compiles it) for what the loader imports."""
    import importlib.util

    origin = importlib.util.find_spec("dagfactory.dagbuilder").origin
    return Path(importlib.util.cache_from_source(origin)).is_file()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100], help="pipeline counts (issue 13: 100 1000 5000)")
    parser.add_argument("--shards-per", type=int, default=1000, help="above this many pipelines, also parse shards")
    parser.add_argument("--render", nargs=2, type=Path, metavar=("PIPELINES", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.render:
        render_folder(*args.render)
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="dagforge-parse-") as tmp:
        for n in args.n:
            result = measure(n, Path(tmp), -(-n // args.shards_per) if n > args.shards_per else 1)
            results.append(result)
            print("info " + json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}))
    for r in results:
        print(f"parse n={r['n']} folder_s={r['folder_s']:.2f} one_dag_s={r['one_dag_s']:.2f} "
              f"dagfactory_s={r['dagfactory_s']:.2f} ratio={r['ratio']:.2f} rss_mb={r['rss_mb']:.0f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
