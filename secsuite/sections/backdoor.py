"""The report's `backdoor` section: schema and renderers. Filled in by the issue that implements it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def markdown(section: Section) -> str:
    return "## backdoor"


def html(section: Section) -> str:
    return "<h2>backdoor</h2>"
