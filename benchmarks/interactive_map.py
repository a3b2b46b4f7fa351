"""Benchmark (not a test): the interactive training map of a paper-sized experiment.

40 runs × 1000 checkpoints, an 8-state HMM (runs walk a left-to-right chain of 8 states,
each skipping some, so the map forks), logged curves at every checkpoint. Builds the page
with the real code (edges with importances, regression, page), opens it in headless
Chromium and times, in the browser:

* opening: navigation start → the page's script has wired the graph and drawn the charts;
* hovering an edge, clicking a state, clicking a run in the list, switching the metric:
  from the event to the second animation frame after it (the new content painted), and
  the same actions through WebDriver (wall clock, including WebDriver's round trips).

Prints the page size and every timing. Goal (issue 11): each under 2 s.

    .venv/bin/python benchmarks/interactive_map.py [--runs 40] [--states 8] [--length 1000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

METRICS = (
    "l1", "l2", "code_sparsity", "trace", "spectral", "computational_sparsity", "mean_lambda",
    "variance_lambda", "mean_w", "median_w", "var_w", "mean_b", "median_b", "var_b",
)


def experiment(n_runs: int, n_states: int, length: int, seed: int = 0) -> dict:
    """Plain inputs of the page for a synthetic experiment with a known chain of states."""
    from trainmap.analysis.hmm import model_from_params
    from trainmap.analysis.regression import convergence_table, dissimilarity, occupancy, state_regression
    from trainmap.analysis.training_map import forking, training_map

    rng = np.random.default_rng(seed)
    d = len(METRICS)
    means = np.cumsum(rng.normal(0.0, 1.0, (n_states, d)), axis=0)
    covars = np.stack([0.3 * np.eye(d)] * n_states)
    transmat = np.full((n_states, n_states), 0.002) + np.eye(n_states)
    transmat /= transmat.sum(axis=1, keepdims=True)
    model = model_from_params(np.eye(n_states)[0], transmat, means, covars)
    steps = np.arange(length) * 10
    paths, seqs, metrics, logs = {}, {}, {}, {}
    for r in range(n_runs):
        visited = [0] + sorted(rng.choice(np.arange(1, n_states - 1), size=rng.integers(2, n_states - 1),
                                          replace=False).tolist()) + [n_states - 1]
        cuts = np.sort(rng.choice(np.arange(1, length), size=len(visited) - 1, replace=False))
        path = np.repeat(visited, np.diff(np.concatenate([[0], cuts, [length]])))
        z = means[path] + rng.normal(0.0, 0.5, (length, d))
        run = str(r)
        paths[run], seqs[run] = path, z
        metrics[run] = pd.DataFrame(3.0 + 0.2 * z, columns=list(METRICS)).assign(step=steps)
        converged_at = int(cuts[-1])
        acc = np.where(np.arange(length) >= converged_at, 0.95, 0.4) + rng.normal(0.0, 0.02, length)
        logs[run] = pd.DataFrame({"step": steps, "eval_accuracy": acc, "eval_loss": 2.0 - 1.5 * acc,
                                  "train_loss": np.exp(-steps / steps[-1] * 3)})
    conv = convergence_table(logs, 0.9)
    edges = training_map(model, seqs, paths, list(METRICS), conv["convergence_step"])
    occ = occupancy(paths, n_states)
    result = state_regression(occ, conv["convergence_step"])
    regression = {**result.to_dict(), "n_runs_regression": result.n_runs,
                  "dissimilarity": dissimilarity(occ.to_numpy()), "forking": forking(edges)}
    states = pd.concat([pd.DataFrame({"run": r, "step": steps, "state": p}) for r, p in paths.items()],
                       ignore_index=True)
    return dict(edges=edges, states=states, model_means=means, features=list(METRICS), metrics=metrics, logs=logs,
                regression=regression, coefficients=result.coefficients, convergence=conv,
                criterion="first logged step with eval_accuracy > 0.9", criterion_column="eval_accuracy",
                threshold=0.9, experiment="benchmark", zscore_first_n=100)


# Dispatch an event on an element of the page and report, in ms, the time until the second
# animation frame after it (the handlers ran and the result was painted).
IN_PAGE = """
const [selector, kind, value, done] = arguments;
const target = document.querySelector(selector);
const t0 = performance.now();
if (kind === "change") { target.value = value; target.dispatchEvent(new Event("change", {bubbles: true})); }
else {
  const box = target.getBoundingClientRect();
  target.dispatchEvent(new MouseEvent(kind, {bubbles: kind !== "mouseenter", clientX: box.x + box.width / 2,
                                             clientY: box.y + box.height / 2}));
}
requestAnimationFrame(() => requestAnimationFrame(() => done(performance.now() - t0)));
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--states", type=int, default=8)
    parser.add_argument("--length", type=int, default=1000)
    args = parser.parse_args()

    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from headless_browser import headless_chrome
    from trainmap.analysis.interactive import write_training_map_html

    t = time.perf_counter()
    inputs = experiment(args.runs, args.states, args.length)
    t_data = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "training_map.html"
        t = time.perf_counter()
        data = write_training_map_html(page, **inputs)
        t_page = time.perf_counter() - t
        size = page.stat().st_size
        edge = max(data["edges"], key=lambda e: e["n_runs"])
        edge_key = f'{edge["source"]}->{edge["target"]}'
        state = max(range(args.states), key=lambda k: len(data["states"][k]["runs"]))
        print(f"experiment: {args.runs} runs x {args.length} checkpoints, {args.states} states, "
              f"{len(data['edges'])} edges (inputs {t_data:.1f} s)")
        print(f"page: {size / 1e6:.2f} MB, built and written in {t_page:.2f} s")

        driver = headless_chrome(1400, 1100)
        try:
            t = time.perf_counter()
            driver.get(page.resolve().as_uri())
            WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.body.dataset.ready") == "1")
            wall_open = time.perf_counter() - t
            ready = driver.execute_script(
                "return performance.getEntriesByName('training-map-ready')[0].startTime")
            errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
            rows = [("open the page", ready, wall_open)]

            actions = [
                ("hover an edge", f'#graph g[data-edge="{edge_key}"]', "mouseenter", None,
                 lambda: ActionChains(driver).move_to_element(
                     driver.find_element(By.CSS_SELECTOR, f'#graph g[data-edge="{edge_key}"] text')).perform(),
                 lambda: driver.find_element(By.ID, "tooltip").is_displayed()),
                ("click a state", f'#graph g[data-state="{state}"]', "click", None,
                 lambda: driver.find_element(By.CSS_SELECTOR, f'#graph g[data-state="{state}"] text').click(),
                 lambda: len(driver.find_elements(By.CSS_SELECTOR, "#run-list li")) == len(data["states"][state]["runs"])),
                ("click a run in the list", "#run-list li", "click", None,
                 lambda: driver.find_element(By.CSS_SELECTOR, "#run-list li").click(),
                 lambda: len({p.get_attribute("data-run") for p in
                              driver.find_elements(By.CSS_SELECTOR, "#metric-chart path.run-line")}) == 1),
                ("switch the metric", "#metric-select", "change", "trace",
                 lambda: Select(driver.find_element(By.ID, "metric-select")).select_by_value("spectral"),
                 lambda: driver.find_element(By.ID, "metric-chart").get_attribute("data-metric") == "spectral"),
            ]
            driver.find_element(By.ID, "graph").click()  # all runs: the largest redraw
            for name, selector, kind, value, _, _ in actions:
                ms = driver.execute_async_script(IN_PAGE, selector, kind, value)
                rows.append([name, ms, None])
            driver.find_element(By.ID, "graph").click()
            for row, (_, _, _, _, act, shown) in zip(rows[1:], actions):
                t = time.perf_counter()
                act()
                WebDriverWait(driver, 30, poll_frequency=0.005).until(lambda _: shown())
                row[2] = time.perf_counter() - t
            errors += [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        finally:
            driver.quit()

    print(f"{'action':<26}{'in page (ms)':>14}{'via WebDriver (s)':>20}")
    for name, ms, wall in rows:
        print(f"{name:<26}{ms:>14.0f}{wall:>20.3f}")
    worst = max(max(ms / 1000, wall) for _, ms, wall in rows)
    print(f"slowest: {worst:.3f} s ({'under' if worst < 2 else 'OVER'} the 2 s goal); console errors: {len(errors)}")


if __name__ == "__main__":
    main()
