"""Reports: JSON per query, Markdown table, self-contained HTML with charts, headless Chromium rendering."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_evaluation import HashingEncoder, small_dataset

from embtune_core.encoders.embedding_cache import EmbeddingCache
from embtune_core.reporting.report import (
    rank_histogram,
    report_html,
    report_json,
    report_markdown,
    write_reports,
)
from embtune_core.scoring.evaluation import System, evaluate_systems

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory):
    systems = [System("base", HashingEncoder(24), spec="hashing:24"),
               System("salted", HashingEncoder(24, salt="x"), spec="hashing:24 salted")]
    return evaluate_systems(systems, small_dataset(), dims=[24, 12, 6],
                            cache=EmbeddingCache(tmp_path_factory.mktemp("cache")), progress_bar=False,
                            n_resamples=200, n_permutations=200)


def test_json_holds_per_query_scores_aligned_with_query_ids(evaluation):
    data = json.loads(json.dumps(report_json(evaluation), allow_nan=False))  # strict JSON
    assert data["format"] == "embtune-evaluation"
    n = len(data["query_ids"])
    assert n == data["dataset"]["evaluated_queries"] == 24
    for system in ("base", "salted"):
        for dim in ("24", "12", "6"):
            per_query = data["per_query"][system][dim]
            assert len(per_query["ndcg@10"]) == len(per_query["first_relevant_rank"]) == n
            mean = data["systems"][0 if system == "base" else 1]["results"][dim]["ndcg@10"]["mean"]
            assert np.mean(per_query["ndcg@10"]) == pytest.approx(mean, abs=1e-5)
    assert data["systems"][0]["results"]["24"]["ndcg@10"]["vs_baseline"] is None
    assert set(data["systems"][1]["results"]["24"]["ndcg@10"]["vs_baseline"]) >= {"difference", "p_ttest",
                                                                                 "p_randomization"}


def test_markdown_has_one_row_per_system_and_dimension(evaluation):
    markdown = report_markdown(report_json(evaluation))
    headline = markdown.split("## Headline metrics")[1].split("##")[0]
    rows = [line for line in headline.splitlines() if line.startswith(("| base", "| salted"))]
    assert len(rows) == 6
    assert "| salted | 12 |" in markdown
    assert re.search(r"\| salted \| 24 \| ndcg@10 \| [+-]\d\.\d{4} \|", markdown)


def test_html_is_self_contained_with_two_decodable_charts(evaluation):
    page = report_html(report_json(evaluation))
    assert "http://" not in page and "https://" not in page and "<script" not in page
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(images) == 2
    for image in images:
        png = base64.b64decode(image)
        assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_reports_are_written_atomically_together(evaluation, tmp_path):
    paths = write_reports(evaluation, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html", "report.json", "report.md"]
    assert json.loads(paths["json"].read_text())["systems"][0]["name"] == "base"


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 100), max_size=60), st.sampled_from([10, 100]))
def test_rank_histogram_counts_every_query_once(ranks, depth):
    ranks = [r if r <= depth else 0 for r in ranks]
    histogram = rank_histogram(ranks, depth)
    assert sum(count for _, count in histogram) == len(ranks)
    assert histogram[-1] == (f">{depth}", ranks.count(0))


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
def test_html_renders_in_headless_chromium(evaluation, tmp_path):
    paths = write_reports(evaluation, tmp_path / "out")
    shot = tmp_path / "shot.png"
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1800", f"--screenshot={shot}",
               paths["html"].as_uri()]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 50_000  # a blank page is a few kilobytes

    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[0] >= 1000 and pixels[..., :3].std() > 0.05  # not a uniform page
    colourful = np.abs(pixels[..., 0] - pixels[..., 2]) > 0.2  # chart lines and bars; tables are grey
    assert colourful.mean() > 0.001


def _measure_in_chromium(page_path: Path, tmp_path: Path) -> dict:
    """Widths as Chromium lays the page out at 1400 px: a copy of the page with a measuring script
    (the report itself has none) writes them into the DOM, which --dump-dom prints."""
    probe = ("<script>window.addEventListener('load', () => { const h = document.querySelector('table.headline');"
             "const v = document.querySelector('.verdict'); document.body.setAttribute('data-measure', JSON.stringify("
             "{page: document.documentElement.scrollWidth, headline: h.getBoundingClientRect().right,"
             " verdict: v.getBoundingClientRect().right, examples: document.querySelectorAll('.ex').length})); });"
             "</script></body>")
    copy = tmp_path / "measured.html"
    copy.write_text(page_path.read_text(encoding="utf-8").replace("</body>", probe), encoding="utf-8")
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'profile-measure'}", "--window-size=1400,1000",
               "--virtual-time-budget=3000", "--dump-dom", copy.as_uri()]
    dom = subprocess.run(command, check=True, capture_output=True, timeout=120, text=True).stdout
    match = re.search(r'data-measure="([^"]+)"', dom)
    assert match, "the measuring script did not run"
    return json.loads(match.group(1).replace("&quot;", '"'))


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
def test_verdict_and_headline_do_not_scroll_sideways_at_1400px(tmp_path):
    # a wide report: four systems (BM25 and a hybrid among them), four dimensions, k = 1, 5, 10
    from embtune_core.retrieval.lexical import BM25Spec
    from embtune_core.scoring.evaluation import MetricSettings

    systems = [System("base", HashingEncoder(32), spec="hashing:32"), System("bm25", BM25Spec(), spec="bm25"),
               System("hybrid", HashingEncoder(32), spec="hybrid:hashing:32", fusion="rrf"),
               System("salted", HashingEncoder(32, salt="x"), spec="hashing:32 salted")]
    evaluation = evaluate_systems(systems, small_dataset(), dims=[32, 16, 8, 4],
                                  settings=MetricSettings(hit_rate_at=(1, 5, 10)),
                                  cache=EmbeddingCache(tmp_path / "cache"), progress_bar=False,
                                  n_resamples=100, n_permutations=100)
    paths = write_reports(evaluation, tmp_path / "out")
    measured = _measure_in_chromium(paths["html"], tmp_path)
    assert measured["page"] <= 1400, measured
    assert measured["headline"] <= 1400 and measured["verdict"] <= 1400, measured
    assert measured["examples"] > 0  # the examples section rendered with cards
