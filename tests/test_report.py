"""The report is written from a real run directory and shows that run's own figures.

One real `autopilot.run` on digits plus its compression (session-scoped, ~40 s) is the fixture; tests
that need a damaged or unusual run copy it and change what a crash, an old
version or a user would change. Every figure checked is read back from the
run's own files (search.json, model/card.json, compress/results.json).
"""
import base64
import io
import json
import re
import shutil
import subprocess

import pytest

import autopilot
from autopilot.report import write_report

from .conftest import digits_table

# With pytest-xdist (make test: --dist loadgroup) this file's tests stay on one
# worker, so its module-scoped real run is trained once.
pytestmark = pytest.mark.xdist_group("report")

CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="session")
def real_run(tmp_path_factory):
    """A finished run: a search of 6 trials, then the compression stage.

    600 of scikit-learn's digits as a table: each trial trains an MLP in a
    second or two. The run is bounded by its trial count, not by a time
    budget, so a busy machine makes it slower but not different (a budget
    would cut trials and change what the report shows). Compression then runs
    as its own stage with a 10 s budget, as `autopilot compress RUN` does."""
    from autopilot.compress import compress_run

    root = tmp_path_factory.mktemp("report-runs")
    data = digits_table(root / "digits600.npz")
    rd = autopilot.run(str(data), trials=6, compress=False, runs_dir=root, name="digits-report", quiet=True, seed=0)
    # Aimed at size with a loose limit, so a compressed file (int8) ships and
    # the report has a shipped model that is not the fp32 one to show: the
    # gate slice is 46 examples, which bound even a perfect match at 7.7 points.
    compress_run(rd.path, budget_s=10, target="size", max_drop=10.0)
    return rd.path


@pytest.fixture
def run_copy(real_run, tmp_path):
    """A private copy of the real run, for tests that damage it."""
    d = tmp_path / real_run.name
    shutil.copytree(real_run, d)
    (d / "report.html").unlink(missing_ok=True)
    return d


def read(d, rel):
    return json.loads((d / rel).read_text())


def pct(x, digits):
    """The report's percentage format (a thin no-break space before %)."""
    return f"{100 * x:.{digits}f}&#8239;%"


def element(html, id_):
    """The markup of the element with this id, up to its closing tag."""
    m = re.search(rf'<(\w+)[^>]*\bid="{id_}"[^>]*>', html)
    assert m, f"no element with id {id_}"
    tag, start = m.group(1), m.start()
    depth, pos = 0, start
    for t in re.finditer(rf"<(/?){tag}\b[^>]*>", html[start:]):
        depth += -1 if t.group(1) else 1
        if depth == 0:
            pos = start + t.end()
            break
    return html[start:pos]


def trial_rows(html):
    body = element(html, "trials").split("<tbody>", 1)[1]
    return re.findall(r"<tr( class=\"best\")?><td class=\"n\">(.*?)</td><td class=\"n\">(\d+)</td>\s*"
                      r"<td><span class=\"badge (\w+)\">", body)


def shipped_expectation(d):
    """What the header must show as the shipped model (name, test accuracy,
    file, batch-1 latency, fallback label): card.json's `shipped` entry, else
    the candidate compression chose, else the fp32 card figures."""
    card = read(d, "model/card.json")
    if card.get("shipped"):
        s = card["shipped"]
        return s["name"], s["test_accuracy"], s["file"], s["latency_ms_batch1"], None
    if (d / "compress" / "results.json").exists():
        res = read(d, "compress/results.json")
        c = next(c for c in res["candidates"] if c["name"] == res["chosen"])
        return c["name"], c["test_acc"], res["chosen_path"], c["latency_ms"]["1"]["p50"], "no &#34;shipped&#34; entry"
    return "fp32", card["test_accuracy"], "model/model.onnx", None, "no &#34;shipped&#34; entry"


def no_external_refs(html):
    stripped = re.sub(r'\sxmlns(:\w+)?="[^"]*"', "", html)
    assert "http://" not in stripped and "https://" not in stripped
    assert "<script" not in html.lower() and "<link" not in html.lower()
    assert re.findall(r'\ssrc="(?!data:image/png;base64,)', html) == []  # images are inline, nothing is fetched


def png_sizes(html):
    from PIL import Image

    out = []
    for b64 in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html):
        with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
            out.append(im.size)
    return out


@pytest.mark.slow
def test_report_shows_the_runs_own_figures(real_run):
    html = write_report(real_run).read_text(encoding="utf-8")
    search, card = read(real_run, "search.json"), read(real_run, "model/card.json")
    assert "could not be rendered" not in html

    # Header: the shipped model's accuracy, size and latency.
    name, acc, file, latency, fallback_label = shipped_expectation(real_run)
    hero = element(html, "shipped-accuracy")
    assert pct(acc, 2) in hero and f">{name}<" in hero
    assert (fallback_label in hero) if fallback_label else ("&#34;shipped&#34; entry" not in hero)
    size_kib = (real_run / file).stat().st_size / 1024
    assert f"{size_kib:.0f} KiB" in element(html, "shipped-size")
    assert latency is not None, "the fixture run is compressed, so the shipped file's latency was measured"
    assert f"{latency:.3f} ms" in element(html, "shipped-latency")  # digits MLPs answer in well under 1 ms
    # The fixture ships a compressed file: the header shows the fp32 figure after the shipped ones.
    assert name != "fp32" and file == "compress/chosen.onnx"
    fp32_acc = (card.get("fp32") or card)["test_accuracy"]
    assert "fp32 model · test accuracy" in html and pct(fp32_acc, 2) in html.split('id="shipped-latency"', 1)[1]
    # The fp32 figures sit beside the shipped one in the test-metrics table.
    table = element(html, "test-accuracy")
    assert pct(acc, 2) in table and pct(card["test_accuracy"], 2) in table
    if card.get("fp32"):
        assert pct(card["fp32"]["test_accuracy"], 2) in table and "fp32 ONNX" in table

    # One row per trial, in the search's ranking, the best trial marked.
    rows = trial_rows(html)
    assert len(rows) == len(search["trials"]) >= 2
    by_number = {t["number"]: t for t in search["trials"]}
    assert sorted(int(r[2]) for r in rows) == sorted(by_number)
    assert [r[3] for r in rows] == [by_number[int(r[2])]["state"] for r in rows]
    best_rows = [r for r in rows if r[0]]  # the trial of the final model
    assert [int(r[2]) for r in best_rows] == [card["best_trial"]] == [search["best_trial"]]
    assert best_rows[0][1] == "1" and rows[0] == best_rows[0]
    assert f"{search['best_value']:.4f}" in element(html, "trials")
    assert f"Learning curves — trial {card['best_trial']}<" in html

    # Optuna's two views are there as real images.
    assert "parameter importance" in html and "parallel coordinates" in html
    sizes = png_sizes(html)
    assert len(sizes) == 2 and all(w >= 400 and h >= 150 for w, h in sizes)
    assert html.count("<svg") >= 4  # class counts, search progress, learning curves, confusion matrix

    # Doctor findings and classes from the run's own files.
    for f in read(real_run, "doctor.json")["findings"]:
        assert f["id"] in html
    for c in card["classes"]:
        assert f">{c}<" in html
    # Every file the report reads that has a schema was read through it, and matched it.
    from autopilot.report.load import FILES_READ, schemas

    footer = html.split("<footer>", 1)[1]
    with_schema = [rel for rel in schemas() if rel in FILES_READ and (real_run / rel).is_file()]
    assert {"run.json", "search.json", "model/card.json", "compress/results.json"} <= set(with_schema)
    for rel in with_schema:
        assert rel in footer.split("checked against their schemas:", 1)[1].split("·", 1)[0]
    assert "does not match its schema" not in html
    no_external_refs(html)
    assert not [p for p in real_run.iterdir() if p.name.endswith(".tmp")]  # atomic write left nothing behind


@pytest.mark.slow
def test_compression_section_lists_every_candidate_and_the_choice(real_run):
    assert (real_run / "compress" / "results.json").exists(), "the fixture run is compressed"
    html = write_report(real_run).read_text(encoding="utf-8")
    res = read(real_run, "compress/results.json")
    section = element(html, "compress")
    for c in res["candidates"]:
        assert f"<code>{c['name']}</code>" in section
    chosen_row = re.search(r'<tr class="best"><td><code>([^<]+)</code>', section)
    assert chosen_row and chosen_row.group(1) == res["chosen"]


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package `chromium`)")
def test_report_renders_in_headless_chromium(real_run, tmp_path):
    """What a reader's browser shows: the DOM after rendering holds the key
    figures, and a screenshot is a real page (not blank)."""
    from PIL import Image, ImageStat

    out = write_report(real_run)
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              f"--user-data-dir={tmp_path / 'profile'}"]
    proc = subprocess.run(common + ["--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=120)
    dom = proc.stdout
    assert "</html>" in dom, f"chromium gave no DOM (exit {proc.returncode}): {proc.stderr[-2000:]}"
    search = read(real_run, "search.json")
    name, acc, _, _, _ = shipped_expectation(real_run)
    # The browser decoded the entity: the number a reader sees.
    assert f"{100 * acc:.2f}\u202f%" in dom, re.sub(r"<[^>]+>", " ", element(dom, "shipped-accuracy"))
    assert dom.count('src="data:image/png;base64,') == 2
    assert f"Trials ({len(search['trials'])})" in dom
    shot = tmp_path / "report.png"
    subprocess.run(common + ["--window-size=1280,2400", f"--screenshot={shot}", out.as_uri()],
                   capture_output=True, timeout=120, check=True)
    with Image.open(shot) as im:
        assert im.size == (1280, 2400)
        assert max(ImageStat.Stat(im.convert("L")).stddev) > 20  # text and plots, not an empty page


@pytest.mark.slow
def test_damaged_run_still_gets_a_report(run_copy):
    """A run stopped half way: files missing, cut mid-write, a broken study."""
    d = run_copy
    best = read(d, "search.json")["best_trial"]
    (d / "model" / "card.json").unlink()
    shutil.rmtree(d / "compress", ignore_errors=True)
    prof = d / "data" / "profile.json"
    prof.write_text(prof.read_text()[:40])  # cut mid-write
    metrics = d / "trials" / str(best) / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"epoch": 99, "train_lo')
    (d / "study" / "journal.log").unlink()
    html = write_report(d).read_text(encoding="utf-8")
    assert "could not be rendered" not in html
    assert "<code>model/card.json</code> missing" in html and "no model" in html
    assert "data/profile.json is not valid JSON" in html
    assert "1 unreadable line(s)" in html
    assert "study/journal.log is missing" in html and len(png_sizes(html)) == 0
    assert len(trial_rows(html)) == len(read(d, "search.json")["trials"])  # search.json alone still gives the table
    no_external_refs(html)


@pytest.mark.slow
def test_values_from_files_are_escaped(run_copy):
    d = run_copy
    evil = "<script>alert('x')</script>"
    info = read(d, "run.json")
    info["data"]["classes"] = ["cat", evil, "a&b", "$x$"] + info["data"]["classes"][4:]
    (d / "run.json").write_text(json.dumps(info))
    html = write_report(d).read_text(encoding="utf-8")
    assert "<script" not in html.lower()
    assert "&lt;script&gt;" in html and "a&amp;b" in html
    assert "could not be rendered" not in html


@pytest.mark.slow
def test_many_classes_show_the_worst_classes_table(run_copy):
    """Above 30 classes the heat map gives way to a table of the worst classes."""
    import numpy as np

    d = run_copy
    k = 40
    rng = np.random.default_rng(0)
    cm = np.diag(rng.integers(5, 10, k)) + (rng.random((k, k)) < 0.05)
    card = read(d, "model/card.json")
    card.update(classes=[f"c{i:02d}" for i in range(k)], confusion_matrix=cm.tolist(),
                per_class_accuracy=(np.diag(cm) / cm.sum(1)).tolist())
    (d / "model" / "card.json").write_text(json.dumps(card))
    info = read(d, "run.json")
    info["data"]["classes"] = card["classes"]
    (d / "run.json").write_text(json.dumps(info))
    html = write_report(d).read_text(encoding="utf-8")
    assert "too many for a readable heat map" in html and "most often predicted as" in html
    worst = int(np.argmin(np.diag(cm) / cm.sum(1)))
    assert f"<td>c{worst:02d}</td>" in element(html, "confusion")
    assert "could not be rendered" not in html


def test_missing_run_dir(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path / "nope")


def test_empty_dir_gets_a_report_naming_what_is_missing(tmp_path):
    html = write_report(tmp_path).read_text(encoding="utf-8")
    assert "<code>run.json</code> missing" in html and "<code>search.json</code> missing" in html
    assert "could not be rendered" not in html


def test_a_failing_section_costs_that_section_only(tmp_path, monkeypatch):
    """Fault injection: a bug in one section's builder shows as a box in that
    section; the rest of the report is still written."""
    import autopilot.report as report

    def broken(run):
        raise RuntimeError("planted <bug>")

    planted = [(sid, title, broken if sid == "search" else fn, tpl) for sid, title, fn, tpl in report.SECTIONS]
    monkeypatch.setattr(report, "SECTIONS", planted)
    html = write_report(tmp_path).read_text(encoding="utf-8")
    box = element(html, "search")
    assert "could not be rendered" in box and "RuntimeError: planted &lt;bug&gt;" in box
    assert html.count("could not be rendered") == 1
    assert '<section id="data">' in html and '<section id="model">' in html
