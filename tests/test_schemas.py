"""Every JSON file a real run writes validates against its one schema, and
no file is written without one. The run is real: the session's
`autopilot run digits --budget 60s` (tests/conftest.py budget_run)."""
from __future__ import annotations

import importlib
import json
from fnmatch import fnmatch

import pytest

# file pattern inside the run directory -> "module:Class" under autopilot.schemas
SCHEMA_OF = {
    "run.json": "run:RunInfo",
    "doctor.json": "doctor:DoctorFile",
    "data/profile.json": "profile:Profile",
    "search.json": "search:SearchFile",
    "trials/*/config.json": "search:TrialConfig",
    "trials/*/doctor.json": "doctor:DoctorFile",
    "trials/*/hparams.json": "hparams:TrainingHparams",
    "monitor/reference.json": "reference:Reference",
    "model/versions.json": "versions:Versions",
    "retrain/*/decision.json": "decision:Decision",
    "model/card.json": "card:ModelCard",
    "compress/results.json": "compress:CompressResults",
    "fusion/results.json": "fusion:FusionResults",
    "data/table.json": "table:TableFile",  # CSV runs (validated on a real run in test_tables.py)
    "data/preprocess.json": "table:PreprocessFile",
}


def schema_for(rel: str):
    for pattern, target in SCHEMA_OF.items():
        if fnmatch(rel, pattern):
            module, cls = target.split(":")
            return getattr(importlib.import_module(f"autopilot.schemas.{module}"), cls)
    return None


def check_spec(spec: dict) -> None:
    """spec.json has two typed versions of networks: templates (1) and
    components (2); boosted trees have their own (TreesSpec)."""
    from autopilot.models import validate_spec
    from autopilot.schemas.spec import TemplateSpec, TreesSpec

    if spec.get("family") == "gbt":
        TreesSpec.model_validate(spec)
    elif spec.get("version", 1) == 1:
        TemplateSpec.model_validate(spec)
    else:
        validate_spec(spec)


@pytest.fixture(scope="module")
def real_run(budget_run):
    """The session's `autopilot run digits --budget 60s` (tests/conftest.py): every stage ran."""
    from autopilot.rundir import RunDir

    path, res = budget_run
    assert res["returncode"] == 0, res["stderr"][-3000:]
    return RunDir(path)


def test_every_json_file_of_a_run_has_a_schema_and_validates(real_run):
    files = sorted(p for p in real_run.path.rglob("*.json") if not p.name.startswith("."))
    assert len(files) >= 6, files
    checked, without = [], []
    for path in files:
        rel = path.relative_to(real_run.path).as_posix()
        if path.name == "spec.json":
            check_spec(json.loads(path.read_text()))
            checked.append(rel)
            continue
        schema = schema_for(rel)
        if schema is None:
            without.append(rel)
            continue
        schema.model_validate_json(path.read_bytes())
        checked.append(rel)
    assert not without, f"files written without a schema: {without}"
    assert {"run.json", "doctor.json", "data/profile.json", "model/card.json", "search.json"} <= set(checked)


def test_the_schemas_refuse_what_no_run_writes(real_run, tmp_path):
    from autopilot.schemas import SchemaError, read
    from autopilot.schemas.run import RunInfo

    info = json.loads((real_run.path / "run.json").read_text())
    info["config"]["max_drop"] = 50  # a typo for half a point must not pass
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "run.json").write_text(json.dumps(info))
    with pytest.raises(Exception, match="max_drop"):
        read(RunInfo, tmp_path / "broken")
    info["config"]["max_drop"] = 0.5
    info["surprise"] = 1
    (tmp_path / "broken" / "run.json").write_text(json.dumps(info))
    with pytest.raises(SchemaError, match="surprise"):
        read(RunInfo, tmp_path / "broken")
