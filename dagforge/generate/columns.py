"""Column generators: how one column's values are made. A registry, one small class per kind.

Each generator is built from the column's YAML mapping, checks itself (:meth:`problems`), names
the columns it reads (templates) or points at (references), and makes one value per row from a
:class:`RowContext`. No database and no Airflow here.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any

from jinja2 import StrictUndefined, TemplateError, Undefined, meta
from jinja2.nativetypes import NativeEnvironment
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import consume

if TYPE_CHECKING:  # Faker costs 0.17 s to import: only generating or checking a faker column pays it
    from faker import Faker

COMMON_KEYS = ("type", "null_fraction")
_RELATIVE_DATE = re.compile(r"^([+-]\d+)([dwmy])$")
_DAYS_PER = {"d": 1, "w": 7, "m": 30, "y": 365}


@dataclass
class RowContext:
    """What a generator may use while making one row."""

    fake: Faker
    rng: random.Random
    row: dict[str, Any] = field(default_factory=dict)
    references: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    """``"table.column"`` → values that exist (in the table or generated earlier in this run)."""
    next_ids: dict[str, int] = field(default_factory=dict)
    """Sequence column → next id."""
    _helpers: dict[str, Any] | None = None

    @property
    def helpers(self) -> dict[str, Any]:
        """Template helpers bound to this context's seeded random generator and Faker (built once)."""
        if self._helpers is None:
            self._helpers = {**_TEMPLATES.globals, **_helpers(self)}
        return self._helpers


class Generator:
    """Base: ``kind`` is the YAML key that selects it."""

    kind = ""

    def __init__(self, column: str, spec: Mapping[str, Any]):
        self.column = column
        self.spec = spec

    def problems(self) -> list[str]:
        """What is wrong with this column's spec, worded for the user."""
        return []

    def reads(self) -> set[str]:
        """Other columns of the same row this generator needs first."""
        return set()

    def points_at(self) -> tuple[str, str] | None:
        """(table, column) this column references, if it is a foreign key."""
        return None

    def static_type(self) -> str | None:
        """SQL type known without making a value (else derived from a sample row)."""
        return None

    def value(self, ctx: RowContext) -> Any:
        raise NotImplementedError


@cache
def _probe_faker() -> Faker:
    """One Faker for validation (building one takes a quarter of a second)."""
    from faker import Faker

    return Faker()


class FakerGenerator(Generator):
    kind = "faker"

    @cached_property
    def arguments(self) -> dict[str, Any]:
        return {k: v for k, v in self.spec.items() if k not in ("faker", *COMMON_KEYS)}

    def problems(self) -> list[str]:
        provider = getattr(_probe_faker(), self.spec["faker"], None)
        if not callable(provider):
            return [f"Faker has no provider {self.spec['faker']!r} (see faker.readthedocs.io/en/master/providers.html)"]
        try:
            provider(**self.arguments)
        except Exception as exc:
            return [f"Faker provider {self.spec['faker']!r} rejected the arguments {self.arguments}: {exc}"]
        return []

    def value(self, ctx: RowContext) -> Any:
        fake, provider = self._bound
        if fake is not ctx.fake:  # bind once per Faker instance (one per table and run)
            fake, provider = ctx.fake, getattr(ctx.fake, self.spec["faker"])
            self._bound = (fake, provider)
        return provider(**self.arguments)

    _bound: tuple[Any, Any] = (None, None)


class SequenceGenerator(Generator):
    kind = "sequence"

    @property
    def start(self) -> int:
        options = self.spec["sequence"]
        return options.get("start", 1) if isinstance(options, Mapping) else 1

    def static_type(self) -> str:
        return "bigint"

    def value(self, ctx: RowContext) -> int:
        current = ctx.next_ids[self.column]
        ctx.next_ids[self.column] = current + 1
        return current


class ChoiceGenerator(Generator):
    kind = "choice"

    def problems(self) -> list[str]:
        weights = self.spec.get("weights")
        if weights is not None and len(weights) != len(self.spec["choice"]):
            return [f"weights has {len(weights)} values but choice has {len(self.spec['choice'])}"]
        if weights is not None and not any(weights):
            return ["weights must not all be 0"]
        return []

    def value(self, ctx: RowContext) -> Any:
        weights = self.spec.get("weights")
        if weights is None:
            return ctx.rng.choice(self.spec["choice"])
        return ctx.rng.choices(self.spec["choice"], weights=weights)[0]


def parse_date(text: str, today: dt.date | None = None) -> dt.date:
    """``YYYY-MM-DD``, ``today``, or relative ``-30d`` / ``+2w`` / ``-6m`` / ``-1y`` (months = 30 days)."""
    today = today or dt.date.today()
    if text == "today":
        return today
    match = _RELATIVE_DATE.match(text)
    if match:
        return today + dt.timedelta(days=int(match.group(1)) * _DAYS_PER[match.group(2)])
    return dt.date.fromisoformat(text)


class RangeGenerator(Generator):
    kind = "range"

    @cached_property
    def bounds(self) -> tuple[Any, Any]:
        """(min, max) as numbers or dates; relative dates resolve against today, once per run."""
        return self._bounds()

    def _bounds(self) -> tuple[Any, Any]:
        low, high = self.spec["range"]["min"], self.spec["range"]["max"]
        if isinstance(low, str) or isinstance(high, str):
            return parse_date(str(low)), parse_date(str(high))
        return low, high

    def problems(self) -> list[str]:
        low, high = self.spec["range"]["min"], self.spec["range"]["max"]
        if isinstance(low, str) != isinstance(high, str):
            return ["range min and max must both be numbers or both be dates"]
        try:
            low, high = self._bounds()
        except ValueError as exc:
            return [f"range: {exc} (use YYYY-MM-DD, today, or -30d / +2w / -6m / -1y)"]
        if low > high:
            return [f"range min {low} is greater than max {high}"]
        if isinstance(low, dt.date) and "decimals" in self.spec["range"]:
            return ["range decimals only applies to numbers"]
        return []

    def static_type(self) -> str:
        low, high = self._bounds()
        decimals = self.spec["range"].get("decimals")
        if isinstance(low, dt.date):
            return "date"
        if decimals is not None:
            return f"numeric({max(len(str(int(abs(v)))) for v in (low, high)) + decimals}, {decimals})"
        return "bigint" if isinstance(low, int) and isinstance(high, int) else "double precision"

    def value(self, ctx: RowContext) -> Any:
        low, high = self.bounds
        decimals = self.spec["range"].get("decimals")
        if isinstance(low, dt.date):
            return low + dt.timedelta(days=ctx.rng.randint(0, (high - low).days))
        if decimals is not None:
            return Decimal(f"{ctx.rng.uniform(low, high):.{decimals}f}")
        if isinstance(low, int) and isinstance(high, int):
            return ctx.rng.randint(low, high)
        return ctx.rng.uniform(low, high)


class ReferenceGenerator(Generator):
    kind = "reference"

    def points_at(self) -> tuple[str, str]:
        table, column = self.spec["reference"].split(".")
        return table, column

    def value(self, ctx: RowContext) -> Any:
        candidates = ctx.references[self.spec["reference"]]
        if not candidates:
            raise ValueError(f"{self.column}: {self.spec['reference']} has no rows to reference")
        return candidates[ctx.rng.randrange(len(candidates))]


class _SandboxedNativeEnvironment(ImmutableSandboxedEnvironment, NativeEnvironment):
    """Templates return Python values (dates stay dates) and cannot reach Python internals."""


_TEMPLATES = _SandboxedNativeEnvironment(undefined=StrictUndefined)
TEMPLATE_HELPERS = ("days", "hours", "minutes", "randint", "uniform", "pick", "fake")


def _helpers(ctx: RowContext) -> dict[str, Callable[..., Any] | Faker]:
    return {
        "days": lambda n: dt.timedelta(days=n),
        "hours": lambda n: dt.timedelta(hours=n),
        "minutes": lambda n: dt.timedelta(minutes=n),
        "randint": ctx.rng.randint,
        "uniform": ctx.rng.uniform,
        "pick": ctx.rng.choice,
        "fake": ctx.fake,
    }


class TemplateGenerator(Generator):
    kind = "template"

    def __init__(self, column: str, spec: Mapping[str, Any]):
        super().__init__(column, spec)
        self._compiled: Any = None

    def _compile(self) -> Any:
        """A lone ``{{ expression }}`` compiles as an expression (no output concatenation); else a template."""
        text = self.spec["template"].strip()
        inner = text[2:-2] if text.startswith("{{") and text.endswith("}}") else None
        if inner is not None and "{{" not in inner and "}}" not in inner and "{%" not in text:
            # what compile_expression builds, evaluated in one shared context: no per-row globals merge
            template = _TEMPLATES.from_string("{% set result = " + inner + " %}")

            def evaluate(variables: dict[str, Any]) -> Any:
                context = template.new_context(variables, shared=True)
                consume(template.root_render_func(context))
                result = context.vars["result"]
                if isinstance(result, Undefined):  # an unknown name, or an attribute the sandbox refused
                    result._fail_with_undefined_error()
                return result

            return evaluate
        template = _TEMPLATES.from_string(self.spec["template"])
        return lambda variables: template.render(**variables)

    def problems(self) -> list[str]:
        try:
            _TEMPLATES.parse(self.spec["template"])
        except TemplateError as exc:
            return [f"template does not parse: {exc}"]
        return []

    def reads(self) -> set[str]:
        return self._reads

    @cached_property
    def _reads(self) -> set[str]:
        try:
            names = meta.find_undeclared_variables(_TEMPLATES.parse(self.spec["template"]))
        except TemplateError:
            return set()
        return set(names) - set(TEMPLATE_HELPERS)

    def value(self, ctx: RowContext) -> Any:
        if any(ctx.row.get(name) is None for name in self._reads):
            return None  # a template over a NULL column is NULL
        if self._compiled is None:
            self._compiled = self._compile()
        return self._compiled({**ctx.helpers, **ctx.row})


GENERATORS: dict[str, type[Generator]] = {
    g.kind: g
    for g in (FakerGenerator, SequenceGenerator, ChoiceGenerator, RangeGenerator, ReferenceGenerator, TemplateGenerator)
}
"""YAML key → generator class. Adding a generator is adding a class here (and to the schema)."""


def generator_kinds(spec: Mapping[str, Any]) -> list[str]:
    return [kind for kind in GENERATORS if kind in spec]


def build_generator(column: str, spec: Mapping[str, Any]) -> Generator:
    (kind,) = generator_kinds(spec)
    return GENERATORS[kind](column, spec)


_PYTHON_TO_SQL: tuple[tuple[type, str], ...] = (
    (bool, "boolean"),
    (int, "bigint"),
    (float, "double precision"),
    (Decimal, "numeric"),
    (dt.datetime, "timestamp"),
    (dt.date, "date"),
    (dt.time, "time"),
    (dt.timedelta, "interval"),
    (bytes, "bytea"),
    (dict, "jsonb"),
    (list, "jsonb"),
)


def sql_type_of(value: Any) -> str:
    """The column type for a sample value (text when nothing more specific fits)."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return "timestamp with time zone"
    for python_type, sql_type in _PYTHON_TO_SQL:
        if isinstance(value, python_type):
            return sql_type
    if type(value).__name__ == "UUID":
        return "uuid"
    return "text"
