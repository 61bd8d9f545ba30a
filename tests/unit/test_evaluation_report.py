"""The HTML report rendered from a real (tiny) evaluator result."""

import base64
import copy
import json
import re
from pathlib import Path

import pytest

from swiperec.evaluation.report import render_report

FIXTURE = Path(__file__).parent.parent / "testdata" / "evaluation_results.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMAGE = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]+)">')


@pytest.fixture(scope="module")
def results() -> dict:
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def page(results) -> str:
    return render_report(results)


def test_plots_are_inline_pngs_with_alt_text(page):
    images = IMAGE.findall(page)
    assert len(images) >= 5
    for data, alt in images:
        assert base64.b64decode(data, validate=True).startswith(PNG_SIGNATURE)
        assert alt.strip()
    assert "<script" not in page
    assert not re.search(r'(src|href)="(?!data:)', page)  # no external assets


def test_headline_and_header_numbers_appear(page, results):
    auc = results["classification"]["model"]["like_vs_all"]["roc_auc"]
    assert f"<td>{auc:.3f}</td>" in page
    share = results["share_of_achievable_auc"]["like_vs_sampled"]
    assert f"{share:.3f}" in page
    assert results["snapshot_content_hash"] in page
    assert results["test_start"] in page
    tn, fp = results["confusion_matrix"][0]
    assert f"<td>{tn}</td><td>{fp}</td>" in page
    for section in ("Retrieval", "Beyond accuracy", "Segments", "Confusion matrix"):
        assert f"<h2>{section}</h2>" in page


def test_null_values_render_as_dash(results):
    results = copy.deepcopy(results)
    results["classification"]["model"]["like_vs_all"]["roc_auc"] = None
    results["retrieval"]["popularity"]["recall@50"] = None
    results["share_of_achievable_auc"]["like_vs_all"] = None
    results["threshold"] = None
    results["curves"]["popularity"]["roc"]["fpr"][3] = None
    page = render_report(results)
    assert "<td>–</td>" in page
    assert '<td colspan="2">–</td>' in page  # the share of achievable AUC
    assert len(IMAGE.findall(page)) >= 5


def test_sparse_results_without_oracle_or_plots_data_render():
    results = {
        "classification": {"model": {"like_vs_all": {"roc_auc": None, "pr_auc": 0.5}}},
        "retrieval": {},
        "score_distributions": {},
        "threshold": None,
    }
    page = render_report(results)
    assert "<td>–</td>" in page
    assert "share of achievable" not in page


def test_blessing_banner_reasons_and_failing_check(results):
    blessing = {
        "blessed": False,
        "reasons": ["recall@50 <b>below</b> popularity & co"],
        "checks": [
            {"name": "auc_floor", "passed": True, "value": 0.52, "limit": 0.5},
            {"name": "beats_baselines_recall@50", "passed": False, "value": 0.24, "limit": 0.28,
             "best_baseline": {"name": "like_rate", "value": 0.28}},
        ],
    }  # fmt: skip
    page = render_report(results, blessing=blessing)
    assert "NOT BLESSED" in page
    assert "beats_baselines_recall@50" in page
    assert "<td>like_rate 0.2800</td>" in page  # the baseline the check compared with
    assert '<tr class="fail">' in page
    assert "recall@50 &lt;b&gt;below&lt;/b&gt; popularity &amp; co" in page
    assert "<b>below</b>" not in page

    blessed = render_report(results, blessing={"blessed": True, "reasons": [], "checks": []})
    assert ">BLESSED<" in blessed
    assert "NOT BLESSED" not in blessed


def test_every_baseline_appears_wherever_scorers_are_listed(results):
    """A scorer the fixture does not have (the like rate) shows in every table and plot."""
    results = copy.deepcopy(results)
    for section in ("classification", "retrieval", "beyond_accuracy", "curves"):
        results[section]["like_rate"] = copy.deepcopy(results[section]["popularity"])
    for entry in results["segments"].values():
        entry["like_rate"] = copy.deepcopy(entry["popularity"])
    page = render_report(results)
    assert page.count("<tr><td>like_rate</td>") == 3  # headline, retrieval, beyond accuracy
    assert "/ like_rate</td>" in page  # segments
    assert "like_rate" in " ".join(alt for _, alt in IMAGE.findall(page))


def test_title_is_escaped(results):
    page = render_report(results, title='<script>alert("x")</script>')
    assert "<script>" not in page
    assert "&lt;script&gt;" in page


def test_writes_the_same_html_to_path(results, tmp_path):
    path = tmp_path / "report.html"
    page = render_report(results, str(path))
    assert path.read_text(encoding="utf-8") == page
