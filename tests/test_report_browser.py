"""The HTML report in a real browser (Debian's headless Chromium), on a 10-class data set.

Every image must load, the page must log no console error, and a screenshot is kept in
``test-artifacts/`` for a person to look at.
"""

from pathlib import Path

import numpy as np
import pytest
from helpers import ANY_ACCURACY, SERVING_SAMPLE, save_oracle, save_oracle_features
from PIL import Image
from weights import CHROMIUM, MISSING

from shapes_pipeline.steps.evaluate import evaluate
from shapes_pipeline.steps.split import split_dataset

pytestmark = pytest.mark.slow  # trains, exports or starts a browser

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
# Flags the machine's closed network needs (no background connections, no sandbox as root).
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LEVELS = [20 + 23 * k for k in range(10)]  # grey level of each class
CLASSES = [f"grey level {k}" for k in range(10)]


@pytest.fixture(scope="module")
def ten_class_report(tmp_path_factory) -> Path:
    """Ten classes of plain grey images; the oracle picks the nearest level, so class 0,
    drawn closer to class 1's level, is always misclassified."""
    root = tmp_path_factory.mktemp("ten")
    rng = np.random.default_rng(0)
    for k, name in enumerate(CLASSES):
        (root / "src" / name).mkdir(parents=True)
        level = LEVELS[0] + 0.6 * (LEVELS[1] - LEVELS[0]) if k == 0 else LEVELS[k]
        for i in range(10):
            pixels = np.clip(level + rng.integers(-3, 4, (28, 28, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / "src" / name / f"{k}_{i}.png")
    split_dataset(
        str(root / "src"), str(root / "ds"), seed=230, train_fraction=0.8, val_fraction=0.1
    )
    # softmax(s * (2 L m - L^2)) over levels L of the mean grey m peaks at the nearest L
    scale = 0.02
    levels = np.array(LEVELS, np.float32)
    kernel = np.tile(scale * 2 * levels / 3, (3, 1))  # the mean of 3 channel means
    save_oracle(root / "model", kernel, -scale * levels**2, CLASSES)
    result = evaluate(
        str(root / "ds"),
        [save_oracle_features(root / "ds", root / "features")],
        str(root / "model"),
        predictions_path=str(root / "predictions.csv"),
        report_path=str(root / "report.html"),
        evaluation_path=str(root / "evaluation.json"),
        gate=ANY_ACCURACY,
        serving_sample=SERVING_SAMPLE,
    )
    assert result["confusion_matrix"][0][1] == 2 and result["test_accuracy"] == 0.9
    return root / "report.html"


def test_report_renders_in_chromium_with_every_image(ten_class_report):
    if not Path(CHROMIUM).exists():
        pytest.fail(MISSING["chromium"])
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(ten_class_report.as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all(
            "img", "imgs => imgs.map(i => [i.alt, i.complete, i.naturalWidth])"
        )
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report-10-classes.png"), full_page=True)
        browser.close()

    assert errors == []
    broken = [alt for alt, complete, width in images if not (complete and width > 0)]
    assert broken == [] and len(images) == 3 + 2 + 12  # figures, mistakes, correct sample
    widths = {alt: width for alt, _, width in images}
    assert widths["confusion matrix, counts"] >= 600  # ten classes get a larger figure
    text = ten_class_report.read_text()
    assert "Misclassified: 2 shown of 2, of 20" in text
    assert all(f"<td>{name}</td>" in text for name in CLASSES)
