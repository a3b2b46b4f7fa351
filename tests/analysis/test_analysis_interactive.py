"""The interactive training map (training_map.html) in a real headless browser.

The experiment comes from synthetic runs with a planted detour (tests/synthetic_runs.py)
through the real CLI stages; the page is then opened in headless Chromium (selenium) and
every claim is checked against the files the other stages wrote (edges.csv, states.csv,
coefficients.csv, metrics.csv). Skipped only when no browser or chromedriver is found.
"""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest

from headless_browser import find_browser, headless_chrome
from synthetic_runs import THRESHOLD, write_synthetic_runs
from trainmap.analysis.training_map import feature_label
from trainmap.cli import main

_, _, NO_BROWSER = find_browser()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(NO_BROWSER), reason=f"no headless browser: {NO_BROWSER}")]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """hmm-select, hmm-decode, map (with the page) and regress on 12 synthetic runs."""
    exp_dir = tmp_path_factory.mktemp("interactive") / "results" / "synth"
    exp = write_synthetic_runs(exp_dir / "runs", n_runs=12, n_checkpoints=120, seed=0)
    runs = [str(d) for d in exp.run_dirs]
    hmm, mapd = exp_dir / "hmm", exp_dir / "map"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["hmm-select", *runs, "--selection-csv", str(hmm / "selection.csv"), "--model", str(hmm / "model.npz"),
                     "--covariance", "diag", "--max-components", "3", "--restarts", "1", "--no-progress",
                     "--zscore-first-n", str(exp.zscore_first_n)]) == 0
        assert main(["hmm-decode", *runs, "--model", str(hmm / "model.npz"), "--states", str(hmm / "states.csv")]) == 0
        assert main(["regress", *runs, "--states", str(hmm / "states.csv"), "--model", str(hmm / "model.npz"),
                     "--out", str(exp_dir / "regression.json"), "--coefficients", str(exp_dir / "coefficients.csv"),
                     "--convergence-csv", str(exp_dir / "convergence.csv"), "--threshold", str(THRESHOLD)]) == 0
        assert main(["map", *runs, "--model", str(hmm / "model.npz"), "--states", str(hmm / "states.csv"),
                     "--regression", str(exp_dir / "regression.json"),
                     "--edges", str(mapd / "edges.csv"), "--figure-dir", str(mapd)]) == 0
    return {
        "dir": exp_dir,
        "page": mapd / "training_map.html",
        "edges": pd.read_csv(mapd / "edges.csv", dtype={"runs": str}),
        "states": pd.read_csv(hmm / "states.csv", dtype={"run": str}),
        "coefficients": pd.read_csv(exp_dir / "coefficients.csv"),
        "regression": exp_dir / "regression.json",
        "run_dirs": {d.name: d for d in exp.run_dirs},
    }


@pytest.fixture(scope="module")
def driver(experiment):
    from selenium.webdriver.support.ui import WebDriverWait

    d = headless_chrome(1400, 1100)
    try:
        d.get(experiment["page"].resolve().as_uri())
        WebDriverWait(d, 10).until(lambda x: x.execute_script("return document.body.dataset.ready") == "1")
        yield d
    finally:
        d.quit()


def console_errors(driver) -> list[dict]:
    """Browser log entries at level SEVERE since the last call (script errors, failed loads)."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def hover(driver, element) -> str:
    """Move the pointer onto ``element`` and return the tooltip's text once it shows."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    ActionChains(driver).move_to_element(driver.find_element(By.TAG_NAME, "h1")).perform()
    ActionChains(driver).move_to_element(element).perform()
    tip = driver.find_element(By.ID, "tooltip")
    WebDriverWait(driver, 5).until(lambda _: tip.is_displayed())
    return tip.text


def listed_runs(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [li.get_attribute("data-run") for li in driver.find_elements(By.CSS_SELECTOR, "#run-list li[data-run]")]


def chart_runs(driver, chart: str = "metric-chart") -> set[str]:
    from selenium.webdriver.common.by import By

    return {p.get_attribute("data-run") for p in driver.find_elements(By.CSS_SELECTOR, f"#{chart} path.run-line")}


def test_page_is_one_offline_file(experiment):
    text = experiment["page"].read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]*\bsrc=|<link\b|@import|url\(|<iframe|<img\b", text, re.I)
    # The only URLs are XML namespace names of the SVG (identifiers, never fetched).
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", text))
    assert urls and all(u.startswith("http://www.w3.org/") for u in urls), urls


def test_opens_without_console_errors(driver):
    assert driver.execute_script("return document.body.dataset.ready") == "1"
    assert console_errors(driver) == []


def test_one_node_per_state_and_one_edge_per_row(driver, experiment):
    from selenium.webdriver.common.by import By

    nodes = driver.find_elements(By.CSS_SELECTOR, "#graph g[data-state]")
    assert sorted(int(n.get_attribute("data-state")) for n in nodes) == [0, 1, 2]  # the model's 3 states
    edges = driver.find_elements(By.CSS_SELECTOR, "#graph g[data-edge]")
    expected = sorted(f"{s}->{t}" for s, t in zip(experiment["edges"]["source"], experiment["edges"]["target"]))
    assert sorted(e.get_attribute("data-edge") for e in edges) == expected
    keys = {k.get_attribute("data-key"): k.find_element(By.TAG_NAME, "dd").text
            for k in driver.find_elements(By.CSS_SELECTOR, "#key-numbers div")}
    assert {"Runs", "States", "R²", "Concordance (Cox)", "Dissimilarity", "Forking", "Convergence"} <= set(keys)
    assert (keys["Runs"], keys["States"]) == ("12", "3 (diag covariance)")
    # R² is shown with its leave-one-out companion, rounded as regression.json has them.
    reg = json.loads(experiment["regression"].read_text(encoding="utf-8"))
    assert keys["R²"].startswith(f"{reg['r2']:.3f} (LOO {reg['r2_loo']:.3f})")
    assert f"eval_accuracy>{THRESHOLD:g}" in keys["Convergence"]


def test_hovering_an_edge_shows_its_runs_and_top_feature(driver, experiment):
    from selenium.webdriver.common.by import By

    for row in experiment["edges"].itertuples(index=False):
        label = driver.find_element(By.CSS_SELECTOR, f'#graph g[data-edge="{row.source}->{row.target}"] text')
        text = hover(driver, label)
        assert f"Edge {row.source} → {row.target}" in text
        assert f"{row.n_runs}/{row.n_runs_total}" in text
        assert feature_label(row.feature_1) in text and feature_label(row.feature_3) in text
        assert f"{row.transition_prob:.3g}"[:4] in text
    assert console_errors(driver) == []


def test_hovering_a_state_shows_coefficient_detour_and_means(driver, experiment):
    from selenium.webdriver.common.by import By

    states, coef = experiment["states"], experiment["coefficients"].set_index("state")
    # Independent reference for the raw means: metrics.csv joined with states.csv.
    metrics = pd.concat([pd.read_csv(d / "metrics.csv").assign(run=name)
                         for name, d in experiment["run_dirs"].items()])
    joined = states.merge(metrics, on=["run", "step"])
    for k in range(3):
        text = hover(driver, driver.find_element(By.CSS_SELECTOR, f'#graph g[data-state="{k}"] ellipse'))
        visiting = states.loc[states["state"] == k, "run"].nunique()
        assert f"Runs visiting: {visiting} / 12" in text
        assert f"detour: {'yes' if coef.loc[k, 'detour'] else 'no'}" in text
        shown = float(re.search(r"Regression coefficient: ([+\-0-9.e]+) steps", text).group(1))
        assert shown == pytest.approx(coef.loc[k, "coefficient"], rel=1e-3)
        rows = {r.find_elements(By.TAG_NAME, "td")[0].text: r for r in
                driver.find_elements(By.CSS_SELECTOR, "#tooltip tr") if r.find_elements(By.TAG_NAME, "td")}
        assert len(rows) == 14
        raw_l2 = float(rows["L2"].find_elements(By.TAG_NAME, "td")[2].text)
        assert raw_l2 == pytest.approx(joined.loc[joined["state"] == k, "l2"].mean(), rel=1e-3)


def test_clicking_a_state_lists_exactly_its_runs(driver, experiment):
    from selenium.webdriver.common.by import By

    states = experiment["states"]
    for k in range(3):
        driver.find_element(By.CSS_SELECTOR, f'#graph g[data-state="{k}"] text').click()
        expected = set(states.loc[states["state"] == k, "run"])
        assert sorted(listed_runs(driver)) == sorted(expected)
        assert chart_runs(driver) == expected and chart_runs(driver, "log-chart") == expected
        assert "tm-selected" in driver.find_element(By.CSS_SELECTOR, f'#graph g[data-state="{k}"]').get_attribute("class")
    assert console_errors(driver) == []


def test_clicking_an_edge_lists_its_runs_and_a_run_shows_it_alone(driver, experiment):
    from selenium.webdriver.common.by import By

    row = experiment["edges"].sort_values("n_runs").iloc[0]
    driver.find_element(By.CSS_SELECTOR, f'#graph g[data-edge="{row.source}->{row.target}"] text').click()
    expected = row.runs.split(";")
    assert sorted(listed_runs(driver)) == sorted(expected)
    run = listed_runs(driver)[0]
    driver.find_element(By.CSS_SELECTOR, f'#run-list li[data-run="{run}"]').click()
    assert chart_runs(driver) == {run} and chart_runs(driver, "log-chart") == {run}
    assert "active" in driver.find_element(By.CSS_SELECTOR, f'#run-list li[data-run="{run}"]').get_attribute("class")
    # The run's convergence step is marked (vertical line and label in the solo view).
    assert driver.find_elements(By.CSS_SELECTOR, "#log-chart line.conv-line")
    driver.find_element(By.CSS_SELECTOR, f'#run-list li[data-run="{run}"]').click()  # back to the edge's runs
    assert chart_runs(driver) == set(expected)
    assert console_errors(driver) == []


def test_switching_the_metric_redraws_the_trajectories(driver, experiment):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.find_element(By.ID, "graph").click()  # background: every run
    assert len(listed_runs(driver)) == 12
    menu = Select(driver.find_element(By.ID, "metric-select"))
    assert len(menu.options) == 14
    paths = lambda: [p.get_attribute("d") for p in driver.find_elements(By.CSS_SELECTOR, "#metric-chart path.run-line")]  # noqa: E731
    label = lambda: driver.find_element(By.CSS_SELECTOR, "#metric-chart text.axis-label:last-of-type").text  # noqa: E731
    before, before_label = paths(), label()
    menu.select_by_value("trace")
    after = paths()
    assert after and after != before and "trace" in label() and label() != before_label
    assert driver.find_element(By.ID, "metric-chart").get_attribute("data-metric") == "trace"
    assert chart_runs(driver) == set(experiment["states"]["run"])
    assert console_errors(driver) == []


def test_each_run_lists_its_first_detour_step(driver, experiment):
    """The run list gives each run's first step in a detour state, as convergence.csv does."""
    from selenium.webdriver.common.by import By

    reg = json.loads(experiment["regression"].read_text())
    detours = set(reg["detour_states"])
    assert detours, "the planted experiment has a detour state"
    states = experiment["states"]
    first = {run: f.loc[f["state"].isin(detours), "step"].min() for run, f in states.groupby("run")}
    driver.execute_script("document.getElementById('graph').click()")  # the graph's background: every run
    items = {li.get_attribute("data-run"): li.text for li in driver.find_elements(By.CSS_SELECTOR, "#run-list li[data-run]")}
    assert set(items) == set(first)
    for run, step in first.items():
        if np.isnan(step):
            assert "detour" not in items[run], items[run]
        else:
            assert f"first detour at step {int(step):,}" in items[run], items[run]
    assert any(not np.isnan(s) for s in first.values()) and any(np.isnan(s) for s in first.values())
    conv = pd.read_csv(experiment["dir"] / "convergence.csv", dtype={"run": str}).set_index("run")
    for run, step in first.items():
        assert (np.isnan(step) and np.isnan(conv.loc[run, "first_detour_step"])) or conv.loc[run, "first_detour_step"] == step
