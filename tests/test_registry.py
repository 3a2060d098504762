"""The model registry on a real, compressed run: v1 is the file the run
ships, versions hold exactly the file they serve, promotion and rollback
walk the history, and versions.json is read through its schema."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from autopilot.registry import versions
from autopilot.schemas import SchemaError, read
from autopilot.schemas.versions import Versions

from .test_retrain import champion_run  # noqa: F401  (one real run shared by both files)

# With pytest-xdist both files' tests run on one worker, one after another:
# spread over two, the second worker waited idle on the lock while the first
# trained the shared run (conftest.built_once).
pytestmark = pytest.mark.xdist_group("champion")


@pytest.fixture
def run(champion_run, tmp_path):
    dst = tmp_path / "digits"
    shutil.copytree(champion_run, dst, ignore=shutil.ignore_patterns("serve", "retrain", "v[0-9]*", "versions.json"))
    return dst


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autopilot", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_v1_is_the_file_the_run_ships(run):
    results = json.loads((run / "compress" / "results.json").read_text())
    assert results["chosen"] != "fp32", "the fixture's compression (target size) should ship a smaller file"
    before = versions.current(run)
    assert before.version == "v1" and before.onnx == run / "compress" / "chosen.onnx"  # no versions.json yet
    vs = versions.ensure_versions(run)
    v1 = vs.entry("v1")
    assert v1.onnx == "model/v1/chosen.onnx" and v1.compressed == results["chosen"] and v1.source == "run"
    assert v1.onnx_sha256 == versions.sha256(run / "compress" / "chosen.onnx") == versions.sha256(run / v1.onnx)
    assert versions.current(run).onnx == run / "model" / "v1" / "chosen.onnx"
    card = json.loads((run / "model" / "card.json").read_text())
    expected = (card.get("shipped") or {}).get("test_accuracy")
    if expected is not None:  # the served file's own accuracy, not the fp32 figure
        assert v1.test_accuracy == pytest.approx(expected)
    # written through the schema, and read back the same
    assert read(Versions, run) == vs
    assert versions.ensure_versions(run) == vs  # idempotent


def test_promote_and_rollback_walk_the_history(run):
    with pytest.raises(versions.VersionError, match="nothing to roll back"):
        versions.rollback(run)
    versions.ensure_versions(run)
    v2 = versions.add_version(run, run / "model" / "v1", {"source": "manual"}, onnx="chosen.onnx")
    v3 = versions.add_version(run, run / "model" / "v1", {"source": "manual"})
    assert (v2, v3) == ("v2", "v3") and versions.current(run).version == "v1"  # added, not promoted
    assert versions.read_versions(run).entry("v2").onnx == "model/v2/chosen.onnx"
    assert versions.read_versions(run).entry("v3").onnx == "model/v3/model.onnx"
    versions.promote(run, v2)
    assert versions.current(run).onnx == run / "model" / "v2" / "chosen.onnx"
    versions.promote(run, v3)
    assert versions.current(run).version == "v3"
    assert versions.rollback(run) == "v2"
    assert versions.rollback(run) == "v1"
    assert (run / "model" / "model.onnx").read_bytes() == (run / "model" / "v1" / "model.onnx").read_bytes()
    with pytest.raises(versions.VersionError):
        versions.rollback(run)
    hist = read(Versions, run).history
    assert [(h.action, h.from_, h.to) for h in hist] == [
        ("init", None, "v1"), ("promote", "v1", "v2"), ("promote", "v2", "v3"), ("rollback", "v3", "v2"),
        ("rollback", "v2", "v1")]
    raw = json.loads((run / "model" / "versions.json").read_text())
    assert raw["history"][1]["from"] == "v1" and "from_" not in raw["history"][1]  # the file says "from"


def test_a_missing_file_or_version_is_refused(run):
    with pytest.raises(versions.VersionError, match="no model.onnx|no chosen.onnx"):
        versions.add_version(run, run / "nowhere", {"source": "manual"})
    vs = versions.ensure_versions(run)
    with pytest.raises(versions.VersionError, match="no model version 'v9'"):
        versions.promote(run, "v9")
    assert versions.read_versions(run) == vs  # nothing changed


def test_a_versions_file_no_registry_wrote_is_refused(run):
    versions.ensure_versions(run)
    f = run / "model" / "versions.json"
    vs = json.loads(f.read_text())
    vs["versions"][0]["surprise"] = 1
    f.write_text(json.dumps(vs))
    with pytest.raises(SchemaError, match="surprise"):
        versions.current(run)
    res = cli("rollback", run)
    assert res.returncode == 2 and "versions.json" in res.stderr and "Traceback" not in res.stderr


def test_rollback_command(run):
    res = cli("rollback", run)
    assert res.returncode == 2 and "nothing to roll back" in res.stderr and "Traceback" not in res.stderr
    versions.ensure_versions(run)
    versions.promote(run, versions.add_version(run, run / "model" / "v1", {"source": "manual"}))
    res = cli("rollback", run)
    assert res.returncode == 0 and "now serves v1" in res.stdout
    assert versions.current(run).version == "v1"
