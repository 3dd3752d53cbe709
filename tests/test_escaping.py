"""Every string from the data (class names, file names, paths) is escaped for each place
it is rendered (issue 32): the KFP UI's Markdown summary, rendered here by a CommonMark
parser with GFM tables, and the one-line messages of a terminal or a step's log. (The
HTML report is rendered in Chromium by test_report_browser.py; nothing writes
TensorBoard text.) The names are drawn: markup, HTML, table pipes, line breaks."""

from html.parser import HTMLParser

from hypothesis import given
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from shapes_pipeline.helpers import report
from shapes_pipeline.helpers.step import EVENT, one_line, parse_event, printable

HOSTILE = [
    "<img src=x onerror=alert(1)>", "<script>alert(1)</script>", "a|b", "**bold**", "`code`",
    "[link](javascript:alert(1))", "# heading", "line\nbreak", "&lt;", "&#60;b&#62;", "\\|",
    "![i](http://x/y.png)", "<!-- c -->", "| --- |", "_under_", "\u2028", "\r", "\x00",
]  # fmt: skip
names = st.one_of(st.sampled_from(HOSTILE), st.text(min_size=1, max_size=20))


class Shown(HTMLParser):
    """The rendered HTML's tags, and the text of each table row's cells."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.rows: list[list[str]] = []
        self.in_cell = False

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.add(tag)
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self.rows[-1].append("")
            self.in_cell = True

    def handle_endtag(self, tag) -> None:
        if tag in ("td", "th"):
            self.in_cell = False

    def handle_data(self, data) -> None:
        if self.in_cell:
            self.rows[-1][-1] += data


def an_evaluation(classes: list[str], text: str) -> dict:
    per_class = {"precision": 1.0, "recall": 1.0, "f1-score": 1.0, "support": 3}
    return {
        "classes": classes,
        "classification_report": {c: per_class for c in [*classes, "macro avg", "weighted avg"]},
        "warnings": [f"{text}: a warning naming a file"],
        "training": {
            "backbone": "MobileNet",
            "weights": text,
            "image_size": 32,
            "best_epoch": 1,
            "epochs_run": 1,
            "early_stopping": False,
            "caching": "memory",
            "devices": ["CPU"],
            "precision": "float32",
        },  # fmt: skip
        "data": {"source": text},
        "n_test": 3 * len(classes),
        "test_accuracy": 1.0,
        "accuracy_ci95": (0.9, 1.0),
        "gate": {
            "passed": False,
            "reason": text,
            "champion_uri": text,
            "champion_accuracy": None,
            "classes_added": [text],
            "classes_lost": [],
        },  # fmt: skip
    }


@given(classes=st.lists(names, min_size=1, max_size=4, unique=True), text=names)
def test_the_markdown_summary_shows_every_name_as_text(classes, text):
    """Rendered as CommonMark with GFM tables: no HTML but the summary's own, one table
    row per class with five cells, each class shown exactly as it is named."""
    html = (
        MarkdownIt("commonmark")
        .enable("table")
        .render(report.markdown(an_evaluation(classes, text)))
    )
    shown = Shown()
    shown.feed(html)
    assert shown.tags <= {"h1", "p", "strong", "ul", "li", "table", "thead", "tbody", "tr",
                          "th", "td"}, html  # fmt: skip
    rows = shown.rows[1:]  # the header aside
    assert all(len(row) == 5 for row in rows), html
    assert [row[0] for row in rows[: len(classes)]] == [printable(c) for c in classes]


@given(name=names)
def test_a_name_in_a_line_never_starts_another(name):
    """A log or terminal line quoting a name stays one line, and no name forges an event
    line for the local runner to read."""
    line = one_line(f"error: {name}\n{EVENT}" + '{"event": "end", "step": "train"}')
    assert len(line.splitlines()) == 1 and line.isprintable()
    assert parse_event(line) is None
