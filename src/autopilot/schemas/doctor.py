"""doctor.json (the pre-flight) and trials/<n>/doctor.json (the live doctor):
findings with evidence, and the checks that ran (written by doctor.findings)."""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from .base import Part, RunFile


class FindingEntry(Part):
    id: str
    severity: Literal["info", "warn", "error"]
    evidence: dict[str, Any]
    why: str
    suggestion: str


class CheckEntry(Part):
    id: str
    status: Literal["ok", "found", "skipped"]
    seconds: float
    note: str | None = None


class DoctorFile(RunFile):
    FILE: ClassVar[str] = "doctor.json"
    findings: list[FindingEntry]
    checks: list[CheckEntry]
    worst: Literal["ok", "info", "warn", "error"]
    elapsed_s: float
