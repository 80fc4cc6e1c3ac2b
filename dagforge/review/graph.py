"""A compiled pipeline's tasks, groups and dependencies as Mermaid or Graphviz DOT. Pure."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TaskNode:
    task_id: str
    """Full Airflow task id, ``group.task`` inside a group."""
    label: str
    group: str | None
    upstream: tuple[str, ...]


def task_nodes(config: dict[str, Any]) -> list[TaskNode]:
    """Tasks of a dag-factory config with full ids and upstream task ids, in config order."""
    tasks: dict[str, dict[str, Any]] = config.get("tasks", {})

    def full_id(name: str) -> str:
        group = tasks[name].get("task_group_name")
        return f"{group}.{name}" if group else name

    def label(name: str) -> str:  # a mapped task (chunks): one instance per item at run time
        return f"{name} [mapped]" if tasks[name].get("expand") else name

    return [
        TaskNode(
            full_id(name),
            label(name),
            task.get("task_group_name"),
            tuple(full_id(d) for d in task.get("dependencies", [])),
        )
        for name, task in tasks.items()
    ]


def _mermaid_id(task_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", task_id)


def to_mermaid(dag_id: str, config: dict[str, Any]) -> str:
    nodes = task_nodes(config)
    lines = ["flowchart LR", f"  %% {dag_id}"]
    for group in _groups(nodes):
        lines.append(f'  subgraph {_mermaid_id("group_" + group)}["{group}"]')
        lines += [f'    {_mermaid_id(n.task_id)}["{n.label}"]' for n in nodes if n.group == group]
        lines.append("  end")
    lines += [f'  {_mermaid_id(n.task_id)}["{n.label}"]' for n in nodes if n.group is None]
    lines += [f"  {_mermaid_id(up)} --> {_mermaid_id(n.task_id)}" for n in nodes for up in n.upstream]
    return "\n".join(lines) + "\n"


def to_dot(dag_id: str, config: dict[str, Any]) -> str:
    nodes = task_nodes(config)
    lines = [f'digraph "{dag_id}" {{', "  rankdir=LR;", "  node [shape=box, style=rounded];"]
    for group in _groups(nodes):
        lines.append(f'  subgraph "cluster_{group}" {{')
        lines.append(f'    label="{group}";')
        lines += [f'    "{n.task_id}" [label="{n.label}"];' for n in nodes if n.group == group]
        lines.append("  }")
    lines += [f'  "{n.task_id}" [label="{n.label}"];' for n in nodes if n.group is None]
    lines += [f'  "{up}" -> "{n.task_id}";' for n in nodes for up in n.upstream]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _groups(nodes: list[TaskNode]) -> list[str]:
    return list(dict.fromkeys(n.group for n in nodes if n.group))


FORMATS: dict[str, Callable[[str, dict[str, Any]], str]] = {"mermaid": to_mermaid, "dot": to_dot}
