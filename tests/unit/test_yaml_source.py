import time
from pathlib import Path

from dagforge.spec.yaml_source import MAX_FILE_BYTES, format_path, load_yaml, parse_yaml_text


def test_positions_of_values_and_keys() -> None:
    doc, errors = parse_yaml_text("a: 1\nb:\n  - x\n  - {c: 2}\n", "f.yml")
    assert errors == []
    assert doc.data == {"a": 1, "b": ["x", {"c": 2}]}
    assert (doc.values[("b", 1, "c")].line, doc.values[("b", 1, "c")].column) == (4, 9)
    assert (doc.keys[("b",)].line, doc.keys[("b",)].column) == (2, 1)


def test_keys_stay_strings_and_dates_stay_text() -> None:
    doc, _ = parse_yaml_text("on: [failure]\nstart_date: 2024-01-01\nyes: 1\n", "f.yml")
    assert doc.data == {"on": ["failure"], "start_date": "2024-01-01", "yes": 1}


def test_python_tags_are_refused_not_executed() -> None:
    text = "pipeline: !!python/object/apply:os.system ['touch /tmp/dagforge-pwned']\n"
    _, errors = parse_yaml_text(text, "evil.yml")
    assert len(errors) == 1
    assert errors[0].line == 1 and errors[0].key_path == "pipeline"
    assert "not allowed" in errors[0].message
    assert not Path("/tmp/dagforge-pwned").exists()


def test_custom_tags_are_refused() -> None:
    _, errors = parse_yaml_text("a:\n  b: !env SECRET\n", "f.yml")
    assert [(e.line, e.key_path) for e in errors] == [(2, "a.b")]


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]")
    started = time.monotonic()
    _, errors = parse_yaml_text("\n".join(lines) + "\n", "bomb.yml")
    assert time.monotonic() - started < 5
    assert len(errors) == 1 and "aliases" in errors[0].message


def test_huge_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.yml"
    path.write_text("a: " + "x" * (MAX_FILE_BYTES + 10) + "\n")
    _, errors = load_yaml(path)
    assert len(errors) == 1 and "limited to 1 MB" in errors[0].message


def test_duplicate_keys_are_errors() -> None:
    _, errors = parse_yaml_text("tables:\n  - name: a\n    name: b\n", "f.yml")
    assert [(e.line, e.column, e.key_path, e.message) for e in errors] == [
        (3, 5, "tables[0].name", "duplicate key 'name'")
    ]


def test_syntax_error_has_the_parser_position() -> None:
    _, errors = parse_yaml_text("a: [1, 2\nb: 3\n", "f.yml")
    assert len(errors) == 1
    assert errors[0].line == 2 and errors[0].message.startswith("YAML syntax error")


def test_merge_keys_work() -> None:
    doc, errors = parse_yaml_text("base: &b {mode: full}\nt: {<<: *b, name: x}\n", "f.yml")
    assert errors == [] and doc.data["t"] == {"mode": "full", "name": "x"}


def test_format_path() -> None:
    assert format_path(("tables", 0, "cursor")) == "tables[0].cursor"
    assert format_path(()) == "<file>"
