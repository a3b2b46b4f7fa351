"""A comparison's interactive joint map (results/compare/{cmp}/training_map.html): the
experiment page over every condition's runs, drawn as the joint map, with each state and
edge also broken down by condition. The payload is checked against the comparison's own
tables (occupancy.csv, transitions.csv, states.csv); the page is then opened in headless
Chromium and hovered like a reader would."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from headless_browser import find_browser, headless_chrome
from test_analysis_compare import _compare_planted
from trainmap.io import contracts

_, _, NO_BROWSER = find_browser()


@pytest.fixture(scope="module")
def joint(tmp_path_factory):
    """Two conditions on planted states: `stable` never takes the detour, `unstable` always."""
    out, _, _, reg = _compare_planted(tmp_path_factory.mktemp("joint"), "planted", {"stable": 0.0, "unstable": 1.0})
    text = out.map_html.read_text(encoding="utf-8")
    payload = re.search(r'<script type="application/json" id="tm-data">(.*?)</script>', text, re.S)
    assert payload, "the page embeds its data"
    return dict(out=out, reg=reg, text=text, data=json.loads(payload.group(1)))


def test_the_page_is_written_with_the_other_outputs_and_is_offline(joint):
    assert joint["out"].map_html in joint["out"].outputs
    assert "<svg" in joint["text"] and "http://" not in joint["text"].replace("http://www.w3.org", "")
    assert joint["data"]["experiment"] == "planted (stable vs unstable)"


def test_every_state_shows_each_conditions_use_as_occupancy_csv_says(joint):
    occ = pd.read_csv(joint["out"].occupancy_csv)
    data = joint["data"]
    assert [c["name"] for c in data["conditions"]] == ["stable", "unstable"]
    assert [c["n_runs"] for c in data["conditions"]] == [6, 6]
    for state in data["states"]:
        mine = occ[occ[contracts.STATE] == state["state"]]
        assert [(r["condition"], r["runs"], r["n_runs"]) for r in state["by_condition"]] == [
            (r.condition, int(r.runs_visiting), int(r.n_runs)) for r in mine.itertuples()]
        assert sum(r["runs"] for r in state["by_condition"]) == len(state["runs"])
    exclusive = [s for s in data["states"] if [r["condition"] for r in s["by_condition"] if r["runs"]] == ["unstable"]]
    assert exclusive, "the planted detour state is the unstable condition's alone"
    assert all(run.startswith("unstable/") for s in exclusive for run in s["runs"])


def test_every_edge_shows_each_conditions_runs_as_transitions_csv_says(joint):
    trans = pd.read_csv(joint["out"].transitions_csv)
    drawn = set(zip(trans["source"], trans["target"]))
    edges = joint["data"]["edges"]
    assert {(e["source"], e["target"]) for e in edges} == drawn
    for e in edges:
        mine = trans[(trans["source"] == e["source"]) & (trans["target"] == e["target"])]
        assert [(r["condition"], r["n_runs"]) for r in e["by_condition"]] == [
            (r.condition, int(r.n_runs)) for r in mine.itertuples()]
        assert sum(r["n_runs"] for r in e["by_condition"]) == e["n_runs"]


def test_key_numbers_are_the_comparisons(joint):
    data, reg = joint["data"], joint["reg"]
    assert data["n_runs"] == data["n_runs_regression"] == reg.n_runs == 12
    assert data["detour_states"] == sorted(reg.detour_states)
    assert data["dissimilarity"] is None and data["forking"] is None  # per pair of conditions, not one number
    assert data["criterion"] == "stable: eval_accuracy>0.9; unstable: eval_accuracy>0.9"


@pytest.mark.slow
@pytest.mark.skipif(bool(NO_BROWSER), reason=f"no headless browser: {NO_BROWSER}")
def test_hovering_the_detour_state_names_the_one_condition_that_visits_it(joint):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    exclusive = next(s for s in joint["data"]["states"]
                     if [r["condition"] for r in s["by_condition"] if r["runs"]] == ["unstable"])
    d = headless_chrome(1400, 1100)
    try:
        d.get(joint["out"].map_html.resolve().as_uri())
        WebDriverWait(d, 10).until(lambda x: x.execute_script("return document.body.dataset.ready") == "1")
        assert not [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
        node = d.find_element(By.CSS_SELECTOR, f'g.tm-state[data-state="{exclusive["state"]}"]')
        ActionChains(d).move_to_element(node).perform()
        tip = d.find_element(By.ID, "tooltip")
        WebDriverWait(d, 5).until(lambda _: tip.is_displayed())
        assert f"State {exclusive['state']}" in tip.text and "only unstable" in tip.text
        assert "unstable 6/6" in tip.text.replace("\n", " ") and "stable 0/6" in tip.text.replace("\n", " ")
        assert "Conditions" in d.find_element(By.ID, "key-numbers").text
        node.click()
        listed = [li.get_attribute("data-run") for li in d.find_elements(By.CSS_SELECTOR, "#run-list li[data-run]")]
        assert sorted(listed) == sorted(exclusive["runs"])
        d.save_screenshot(str(joint["out"].root / "screenshot.png"))
    finally:
        d.quit()
