"""Real CSV tables: text categories, missing cells, booleans, dates, ID
columns; the task inferred from the label; the preprocessing fitted on the
training rows and applied identically by predict and serve; the doctor's
table checks; bad table input in one line. The tables are written here, in
the shapes of well-known public ones (passengers, all-letter codes,
species and islands with missing measurements)."""
from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest

from autopilot.data import load, split
from autopilot.data.preprocess import fit_transform, transform
from autopilot.data.table_rows import RowError, rows_to_features
from autopilot.data.tables import prepare

from .conftest import run_cli

# With pytest-xdist (make test: --dist loadgroup) this file's tests stay on one
# worker, so its module-scoped real run is trained once.
pytestmark = pytest.mark.xdist_group("tables")


def write(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def passengers(path, n=300, seed=0):
    """Sex and class decide survival; ages missing; an ID, a name, a date."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        sex, pclass = rng.choice(["male", "female"]), rng.choice([1, 2, 3])
        age = "" if rng.random() < 0.2 else f"{rng.uniform(1, 70):.1f}"
        p = (0.8 if sex == "female" else 0.15) + 0.05 * (3 - pclass)
        rows.append([i + 1, f"Passenger {rng.randrange(10 ** 6)} {i}", sex, age, pclass,
                     f"{rng.uniform(5, 100) / pclass:.2f}", rng.choice(["S", "C", "Q", "NA"]),
                     f"1912-04-{rng.randint(1, 10):02d}", rng.choice(["yes", "no"]), int(rng.random() < p)])
    return write(path, ["PassengerId", "Name", "Sex", "Age", "Pclass", "Fare", "Embarked", "Boarded", "Alone",
                        "Survived"], rows)


def letter_codes(path, n=240, seed=0):
    """Every column a letter code, as in the mushroom table; odor decides, up
    to 8 % of labels flipped (odor alone decides 98.5 % of real mushrooms; a
    column that decides every row would be a target leak)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        odor = rng.choice("anlfcyp")
        rows.append([rng.choice("xbfks"), rng.choice("snywgb"), odor, rng.choice("tf"), rng.choice("ftad"),
                     rng.choice("cwd"), rng.choice("bnkg"), rng.choice("kwnbhr"), "p" if (odor in "fcyp") != (rng.random() < 0.08) else "e"])
    return write(path, ["cap-shape", "cap-color", "odor", "bruises", "gill-attachment", "gill-spacing", "gill-size",
                        "gill-color", "class"], rows)


def species(path, n=200, seed=0):
    """Species from measurements, some missing (written 'NA'), and an island."""
    rng = random.Random(seed)
    kinds = {"Adelie": (38.8, 18.3, 190), "Gentoo": (47.5, 15.0, 217), "Chinstrap": (48.8, 18.4, 196)}
    rows = []
    for _ in range(n):
        s = rng.choice(list(kinds))
        m = [f"{v + rng.gauss(0, v * 0.03):.1f}" if rng.random() > 0.05 else "NA" for v in kinds[s]]
        island = {"Adelie": rng.choice(["Torgersen", "Biscoe", "Dream"]), "Gentoo": "Biscoe", "Chinstrap": "Dream"}[s]
        rows.append([s, island, *m, rng.choice(["male", "female", "NA"])])
    return write(path, ["species", "island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "sex"], rows)


# ------------------------------------------------------------ reading

def test_column_types_missing_cells_and_dropped_columns(tmp_path):
    ds = load(str(passengers(tmp_path / "p.csv")), label="Survived")
    types = {c.name: c.type for c in ds.table.schema}
    assert types == {"PassengerId": "id", "Name": "id", "Sex": "category", "Age": "number", "Pclass": "category",
                     "Fare": "number", "Embarked": "category", "Boarded": "datetime", "Alone": "boolean"}
    by_name = {c.name: c for c in ds.table.schema}
    assert by_name["Age"].missing > 30 and by_name["Embarked"].missing > 30  # "" and "NA" are missing cells
    assert "ID" in by_name["PassengerId"].reason and not by_name["Sex"].reason
    assert (ds.task, ds.classes, ds.X.shape[1]) == ("classification", ["0", "1"], 0)  # X comes after the split

    splits = split(ds.y)
    ready = prepare(ds, splits)
    pre = ready.preprocess
    assert {d["name"] for d in pre["dropped"]} >= {"PassengerId", "Name"}
    assert "Age:missing" in ready.feature_names and "Sex=male" in ready.feature_names
    assert any(f.startswith("Boarded:") for f in ready.feature_names)
    assert ready.X.dtype == np.float32 and np.isfinite(ready.X).all()
    assert ready.fingerprint() == ds.fingerprint()  # the raw cells, whatever preprocessing made X
    # Applying the stored JSON again gives the same arrays (workers, resume, monitor).
    again = prepare(ds, splits, json.loads(json.dumps(pre)))
    assert np.array_equal(again.X, ready.X)


def test_numeric_ids_that_are_not_row_numbers_are_dropped_and_quantities_kept():
    from autopilot.data.table_types import infer_column

    rng = random.Random(1)
    scattered = [str(v) for v in rng.sample(range(10 ** 6, 2 * 10 ** 6), 200)]  # random keys, no order, no pattern
    for name in ("customer_id", "PassengerId", "orderID", "ticket no", "ID"):
        col = infer_column(name, scattered)
        assert col.type == "id" and "identifier" in col.reason, name
    auto_increment = [str(v) for v in sorted(rng.sample(range(10 ** 6), 200))]  # gaps, but in row order
    col = infer_column("ref", auto_increment)
    assert col.type == "id" and "row order" in col.reason
    # the same scattered integers under a quantity's name are a number; repeated values never identify rows
    assert infer_column("price_cents", scattered).type == "number"
    assert infer_column("visitor_id", scattered[:150] + scattered[:50]).type == "number"
    assert infer_column("paid", scattered).type == "number"  # "id" inside a word is not the word "id"


def test_fitted_on_training_rows_only(tmp_path):
    ds = load(str(passengers(tmp_path / "p.csv")), label="Survived")
    splits = split(ds.y)
    pre = prepare(ds, splits).preprocess
    age = next(s for s in pre["columns"] if s["name"] == "Age")
    train_ages = [float(ds.table.columns[3][i]) for i in splits["train"] if ds.table.columns[3][i] is not None]
    assert age["fill"] == [pytest.approx(float(np.median(train_ages)))]


def test_the_feature_study_keeps_the_default_unless_another_choice_is_clearly_better(tmp_path):
    rng = np.random.default_rng(0)
    n = 600
    # the label is a threshold on log(x), x heavy-tailed: standard scaling leaves a few huge values that
    # pull a linear model's fit, quantile scaling straightens them - better on every fold
    x = np.exp(rng.normal(0, 2.5, n))
    y = (np.log(x) + rng.normal(0, 0.3, n) > 0).astype(int)
    heavy = load(str(write(tmp_path / "heavy.csv", ["x", "label"], [[f"{v:.6g}", int(t)] for v, t in zip(x, y)])))
    pre = prepare(heavy, split(heavy.y)).preprocess
    scores = {c["choices"]["scaling"]: c["val_score"] for c in pre["study"]["candidates"]}
    assert pre["choices"]["scaling"] == "quantile" and scores["quantile"] > scores["standard"] + 0.05, scores
    # a normal feature: the two scalings are one monotone map apart and score within noise; the default stays
    z = rng.normal(0, 1, n)
    y = (z + rng.normal(0, 1.0, n) > 0).astype(int)
    plain = load(str(write(tmp_path / "plain.csv", ["z", "label"], [[f"{v:.6g}", int(t)] for v, t in zip(z, y)])))
    pre = prepare(plain, split(plain.y)).preprocess
    assert pre["choices"]["scaling"] == "standard", pre["study"]["candidates"]


def test_target_encoding_is_cross_fitted(tmp_path):
    """A training row's encoding never uses its own label: with one value per
    row pair, in-sample encodings would give the label away."""
    rng = np.random.default_rng(0)
    n = 400
    rows = [[f"c{i // 2}", f"{rng.normal():.3f}", int(rng.random() < 0.5)] for i in range(n)]  # 200 values, 2 rows each
    ds = load(str(write(tmp_path / "t.csv", ["code", "x", "label"], rows)))
    splits = split(ds.y)
    pre, X = fit_transform(ds.table, ds.y, splits, ds.task, {"categories": "target"}, ds.classes)
    col = pre["features"].index("code:target")
    enc, y = X[splits["train"], col], ds.y[splits["train"]]
    # In-sample encodings would sit above the prior for label 1 and below for label 0.
    gap = enc[y == 1].mean() - enc[y == 0].mean()
    assert abs(gap) < 0.05, gap


def test_unseen_category_and_missing_cells_in_new_rows(tmp_path):
    ds = load(str(passengers(tmp_path / "p.csv")), label="Survived")
    pre = prepare(ds, split(ds.y)).preprocess
    X = rows_to_features(pre, [{"Sex": "martian", "Age": None, "Pclass": 7, "Fare": "12.5", "Embarked": None,
                                "Boarded": "1912-04-02", "Alone": True}, {}])
    assert X.shape == (2, len(pre["features"])) and np.isfinite(X).all()
    with pytest.raises(RowError, match=r"inputs\[0\]\.Colour: unknown column"):
        rows_to_features(pre, [{"Colour": "red"}])
    with pytest.raises(RowError, match=r"inputs\[1\]\.Age: expected a number, got 'old'"):
        rows_to_features(pre, [{}, {"Age": "old"}])
    with pytest.raises(RowError, match=r"inputs\[0\]\.Fare: a list where a number is expected"):
        rows_to_features(pre, [{"Fare": [1]}])
    # The same transform for CSV cells and JSON values: 3, "3" and 3.0 are one class code.
    cols = {s["name"]: [None] for s in pre["columns"]}
    a = transform(pre, {**cols, "Pclass": ["3"]})
    b = transform(pre, {**cols, "Pclass": [3.0]})
    assert np.array_equal(a, b)


@pytest.mark.parametrize("make,label,expected", [(letter_codes, "class", {"category", "boolean"}),
                                                 (species, "species", {"category", "number"})])
def test_other_public_table_shapes_load(tmp_path, make, label, expected):
    ds = load(str(make(tmp_path / "t.csv")), label=label)
    assert {c.type for c in ds.table.schema} == expected
    ready = prepare(ds, split(ds.y))
    assert np.isfinite(ready.X).all() and ready.X.shape[1] >= len(ds.table.names)


def test_task_inference(tmp_path):
    rng = np.random.default_rng(0)
    rows = [[f"{x:.3f}", rng.choice(["a", "b"]), f"{3 * x + rng.normal(0, 0.1):.4f}"] for x in rng.normal(size=100)]
    p = str(write(tmp_path / "r.csv", ["x", "g", "target"], rows))
    ds = load(p)
    assert ds.task == "regression" and ds.y.dtype == np.float32 and ds.classes == []
    assert "distinct" in ds.table.task_reason
    ready = prepare(ds, split(ds.y))  # quantile-binned stratification keeps every split
    assert ready.preprocess["task"] == "regression" and ready.preprocess["target"]["std"] > 0
    codes = [[f"{x:.3f}", i % 3] for i, x in enumerate(rng.normal(size=60))]
    assert load(str(write(tmp_path / "c.csv", ["x", "label"], codes))).task == "classification"


# ------------------------------------------------------------ doctor

def test_doctor_finds_a_leaked_label_and_reports_the_id_column(tmp_path):
    from autopilot.doctor.table_checks import run_table_checks

    rng = random.Random(1)
    rows = []
    for i in range(200):
        y = rng.choice(["yes", "no"])
        rows.append([i, f"{rng.gauss(0, 1):.3f}", rng.choice("rgb"), "Y" if y == "yes" else "N", y])
    ds = load(str(write(tmp_path / "leak.csv", ["id", "noise", "colour", "outcome_code", "label"], rows)))
    splits = split(ds.y)
    findings, checks = run_table_checks(prepare(ds, splits), splits)
    by_id = {f.id: f for f in findings}
    assert by_id["target-leak"].severity == "error" and "outcome_code" in by_id["target-leak"].evidence["columns"]
    assert "noise" not in by_id["target-leak"].evidence["columns"]
    assert by_id["id-columns"].evidence["columns"].keys() == {"id"}
    assert {c.id for c in checks} == {"id-columns", "mostly-missing", "target-leak", "column-shift"}
    # Without the copy: no leak.
    ds2 = load(str(write(tmp_path / "ok.csv", ["id", "noise", "colour", "label"], [r[:3] + [r[4]] for r in rows])))
    findings, _ = run_table_checks(prepare(ds2, splits), splits)
    assert "target-leak" not in {f.id for f in findings}


def test_doctor_mostly_missing_and_regression_leak(tmp_path):
    from autopilot.doctor.table_checks import run_table_checks

    rng = np.random.default_rng(0)
    rows = []
    for _ in range(200):
        t = rng.normal(50, 10)
        rows.append([f"{t * 2 + 1:.4f}", f"{rng.normal():.3f}" if rng.random() < 0.3 else "", f"{t:.4f}"])
    ds = load(str(write(tmp_path / "r.csv", ["price_cents", "sparse", "target"], rows)))
    splits = split(ds.y)
    ids = {f.id: f for f in run_table_checks(prepare(ds, splits), splits)[0]}
    assert ids["target-leak"].evidence["metric"] == "R²" and "price_cents" in ids["target-leak"].evidence["columns"]
    assert ids["mostly-missing"].evidence["missing_share"]["sparse"] > 0.5


def test_run_stops_on_a_leaked_label_and_leaves_no_run(tmp_path):
    rng = random.Random(2)
    rows = []
    for i in range(150):
        y = rng.choice(["yes", "no"])
        rows.append([i, f"{rng.gauss(0, 1):.3f}", y.upper(), y])
    p = write(tmp_path / "leak.csv", ["row", "noise", "answer_copy", "label"], rows)
    runs = tmp_path / "runs"
    res = run_cli("run", p, "--runs-dir", runs, "--trials", "1", timeout=300)
    assert res.returncode == 2 and "target-leak" in res.stderr, res.stderr[-2000:]
    assert res.stderr.strip().splitlines()[-1].startswith("error: the doctor found errors (target-leak)")
    assert not runs.exists() or not any(runs.iterdir())


# ------------------------------------------------------------ bad input, one line

@pytest.mark.parametrize("case", ["ragged", "label-all-missing", "regression-text", "missing-label"])
def test_bad_table_input_is_one_line(tmp_path, case):
    header = ["a", "b", "y"]
    rows = [[i, "x" if i % 2 else "z", f"{i * 1.37:.2f}"] for i in range(40)]
    extra = []
    if case == "ragged":
        rows[5] = [1, "x"]
        expect = ["line 7", "expected 3 fields, got 2"]
    elif case == "label-all-missing":
        rows = [[r[0], r[1], "NA"] for r in rows]
        expect = ["'y' is missing in every row"]
    elif case == "regression-text":
        rows[9][2] = "twelve"
        extra = ["--task", "regression"]
        expect = ["line 11", "column 'y'", "must be a number", "'twelve'"]
    else:
        rows[3][2] = ""
        expect = ["line 5", "missing label"]
    p = write(tmp_path / "bad.csv", header, rows)
    runs = tmp_path / "runs"
    res = run_cli("run", p, *extra, "--runs-dir", runs, "--trials", "1", timeout=120)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert all(part in lines[0] for part in expect), lines[0]
    assert not runs.exists() or not any(runs.iterdir())


# ------------------------------------------------------------ end to end

@pytest.fixture(scope="module")
def passenger_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tables")
    csv_path = passengers(root / "passengers.csv", n=400)
    res = run_cli("run", csv_path, "--label", "Survived", "--trials", "2", "--runs-dir", root / "runs", "--name",
                  "p", "--quiet", "--workers", "1", "--no-compress")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "task: classification" in res.stderr and "PassengerId" in res.stderr  # the inferred schema is shown
    return root / "runs" / "p"


@pytest.mark.slow
def test_run_writes_schema_and_preprocessing(passenger_run):
    from autopilot.schemas import read
    from autopilot.schemas.run import read_run
    from autopilot.schemas.table import PreprocessFile, TableFile

    table, pre = read(TableFile, passenger_run), read(PreprocessFile, passenger_run)
    assert table.task == "classification" and {c.name for c in table.columns if c.type == "id"} == {"PassengerId", "Name"}
    assert pre.study is not None and len(pre.study.candidates) == 4  # 2 encodings x 2 scalings, scored on validation
    card = json.loads((passenger_run / "model" / "card.json").read_text())
    assert card["input_shape"] == [len(pre.features)]
    assert card["test_accuracy"] > 0.65  # sex and class decide; always-the-commonest is about 0.5
    assert read_run(passenger_run).data.task == "classification"
    # Every trial was cross-validated on the same folds, and the first trials (scikit-learn's defaults) are
    # marked: the selection weighs the search's top trial against them fold by fold (search/select.py)
    import optuna

    from autopilot.rundir import RunDir
    from autopilot.search import select
    from autopilot.search.study import STUDY_NAME, make_storage

    trials = optuna.load_study(study_name=STUDY_NAME, storage=make_storage(RunDir(passenger_run))).trials
    assert [len(t.user_attrs[select.CV_FOLD_SCORES]) for t in trials] == [5, 5]
    assert all(t.user_attrs[select.KNOWN_GOOD] for t in trials)  # --trials 2: the first two queued ones
    assert all(abs(np.mean(t.user_attrs[select.CV_FOLD_SCORES]) - t.value) < 1e-9 for t in trials)
    doctor = json.loads((passenger_run / "doctor.json").read_text())
    assert "id-columns" in {f["id"] for f in doctor["findings"]}
    html = (passenger_run / "report.html").read_text()  # the report lists what was dropped and why
    section = html[html.index('id="table"'):html.index('id="doctor"')]
    assert "PassengerId" in section and "a row number or ID" in section and "val accuracy" in section


@pytest.mark.slow
def test_predict_csv_with_missing_cells_and_unseen_category(passenger_run, tmp_path):
    new = write(tmp_path / "new.csv", ["Sex", "Age", "Pclass", "Fare", "Embarked", "Boarded", "Alone", "Name"],
                [["female", "", 1, "80", "Z", "1912-04-03", "no", "Ann"], ["male", "NA", 3, "?", "", "", "", "Bob"],
                 ["martian", "30", 2, "20", "S", "1912-04-09", "yes", "Cy"]])
    res = run_cli("predict", passenger_run, new)
    assert res.returncode == 0, res.stderr
    rows = list(csv.reader(res.stdout.splitlines()))
    assert rows[0][:2] == ["id", "class"] and len(rows) == 4
    assert rows[1][1] == "1" and rows[2][1] == "0"  # a first-class woman survives, a third-class man does not
    bad = write(tmp_path / "bad.csv", ["Sex", "Age", "Pclass", "Fare", "Embarked", "Boarded", "Alone"],
                [["female", "old", 1, "80", "S", "1912-04-03", "no"]])
    res = run_cli("predict", passenger_run, bad)
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0
    assert "line 2 column 'Age'" in res.stderr and "'old'" in res.stderr


@pytest.mark.slow
@pytest.mark.parametrize("make,label,new_row", [
    (letter_codes, "class", ["x", "s", "f", "t", "a", "c", "b", "NEW"]),
    (species, "species", ["Biscoe", "47.0", "NA", "", "female"])])
def test_other_table_shapes_run_and_predict(tmp_path, make, label, new_row):
    p = make(tmp_path / "t.csv")
    runs = tmp_path / "runs"
    res = run_cli("run", p, "--label", label, "--trials", "2", "--runs-dir", runs, "--name", "t", "--quiet",
                  "--workers", "1", "--no-compress")
    assert res.returncode == 0, res.stderr[-3000:]
    card = json.loads((runs / "t" / "model" / "card.json").read_text())
    assert card["test_accuracy"] > 0.75  # one column (odor; the measurements) decides
    with open(p) as f:
        header = next(csv.reader(f))
    new = write(tmp_path / "new.csv", [h for h in header if h != label], [new_row])
    res = run_cli("predict", runs / "t", new)
    assert res.returncode == 0 and len(res.stdout.strip().splitlines()) == 2, res.stderr


@pytest.mark.slow
def test_serve_json_rows(passenger_run):
    from autopilot.serve.client import ServerProcess

    with ServerProcess(passenger_run, "--no-monitor") as s:
        status, doc = s.post("/v1/predict", {"inputs": [
            {"Sex": "female", "Age": None, "Pclass": 1, "Fare": 80, "Embarked": "S", "Boarded": "1912-04-03",
             "Alone": False},
            {"Sex": "never-seen", "Pclass": "3"}]})
        assert status == 200, doc
        assert [p["class"] for p in doc["predictions"]][0] == "1" and len(doc["predictions"]) == 2
        status, doc = s.post("/v1/predict", {"inputs": [{"Sex": "male", "Colour": "red"}]})
        assert status == 422 and "inputs[0].Colour" in doc["detail"] and "unknown column" in doc["detail"]
        status, doc = s.post("/v1/predict", {"inputs": [{"Age": "very old"}]})
        assert status == 422 and "inputs[0].Age" in doc["detail"]
        status, _ = s.get("/readyz")
        assert status == 200
