"""The Jinja2 environment of the report: templates/ inside the package,
autoescape on for every template (values from run files are never trusted)."""
from __future__ import annotations

from functools import lru_cache

from jinja2 import Environment, PackageLoader, StrictUndefined

from .filters import FILTERS


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("autopilot.report", "templates"),
        autoescape=True,  # every template is HTML; select_autoescape would skip *.j2
        undefined=StrictUndefined,  # a misspelt field fails its section loudly, not silently blank
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(FILTERS)
    return env


def render(template: str, **context) -> str:
    return environment().get_template(template).render(**context)
