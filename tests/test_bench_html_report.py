"""report.html rendered by a real headless browser (Debian's chromium): every table of results.md and
every picture of the folder is on the page, and every picture really loads (its decoded width is the
file's); the summary's cells are the full tables' cells as written (intervals, ≈, bold). Chromium is
required, not optional: without it these tests fail (`apt-get install -y chromium`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from i2ibench import files
from i2ibench.bench import report
from i2ibench.bench.html_report import REPORT_NAME, render, write_html_report
from i2ibench.errors import UserError

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "results" / "sketch-photo" / "smoke"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CARD = {"image_size": 64, "weights_sha256": "abc", "kid_subsets": 100}
# The summary's columns, told by the headers' titles (not by report.column_key, the code under test):
# N, then the headline metrics in whatever order and with whatever marks (FID‡) the table has.
HEADLINE_TITLES = ("N", "FID", "KID×10³", "1-NN", "SSIM(gt)")

# Appended to a copy of the page (never to report.html, which needs no JavaScript): once everything has
# loaded, write each picture's decoded and rendered width into the DOM that --dump-dom prints.
PROBE = """<img id="probe-missing" src="no-such-picture.png" alt="probe">
<script>window.addEventListener("load", () => {
  for (const img of document.images) {
    img.setAttribute("data-natural-width", img.naturalWidth);
    img.setAttribute("data-rendered-width", Math.round(img.getBoundingClientRect().width));
  }
  document.body.setAttribute("data-probed", "yes");
});</script>"""


# --- the browser ------------------------------------------------------------------------------------

def browser_dom(page: Path, tmp_path: Path) -> "Node":
    """The DOM chromium builds from `page` (a copy with PROBE, resolving the page's relative paths)."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} not found: the report test needs a headless browser; install it with "
                    "`apt-get install -y chromium` (Debian)")
    text = page.read_text()
    base = f'<base href="{page.parent.resolve().as_uri()}/">'
    probed = tmp_path / "probed.html"
    probed.write_text(text.replace("<head>", "<head>" + base, 1).replace("</body>", PROBE + "</body>", 1))
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1200,2000",
               "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = parse(done.stdout)
    assert dom.find("body")[0].attrs.get("data-probed") == "yes", "the page's load event never ran"
    return dom


class Node:
    def __init__(self, tag: str, attrs: dict, parent: "Node | None"):
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []

    def find(self, tag: str) -> list["Node"]:
        found = []
        for child in self.children:
            if isinstance(child, Node):
                found += ([child] if child.tag == tag else []) + child.find(tag)
        return found

    def text(self) -> str:
        return " ".join("".join(c if isinstance(c, str) else " " + c.text() + " " for c in self.children).split())

    def ancestor(self, tag: str) -> "Node | None":
        node = self.parent
        while node is not None and node.tag != tag:
            node = node.parent
        return node


class TreeBuilder(HTMLParser):
    VOID = {"img", "meta", "br", "hr", "link", "input", "base", "col", "source", "wbr"}

    def __init__(self):
        super().__init__()
        self.root = self.current = Node("#document", {}, None)

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.current)
        self.current.children.append(node)
        if tag not in self.VOID:
            self.current = node

    def handle_endtag(self, tag):
        node = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data):
        self.current.children.append(data)


def parse(text: str) -> Node:
    builder = TreeBuilder()
    builder.feed(text)
    return builder.root


# --- what the page must show ------------------------------------------------------------------------

def markdown_tables(text: str) -> list[list[list[str]]]:
    """Each pipe table of results.md as rows of plain cell text (header first, emphasis marks dropped)."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            if not re.fullmatch(r"\|(-+\|)+", line.replace(" ", "")):
                cells = re.split(r"(?<!\\)\|", line.strip()[1:-1])
                current.append([" ".join(c.replace("\\|", "|").replace("*", "").split()) for c in cells])
        elif current:
            tables.append(current)
            current = []
    return tables


def dom_table(table: Node) -> list[list[str]]:
    return [[cell.text() for cell in row.children if isinstance(cell, Node) and cell.tag in ("th", "td")]
            for row in table.find("tr")]


def pictures_on_disk(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*.png")}


def check_page(folder: Path, dom: Node) -> None:
    """Every Markdown table, every picture (loaded at its real width, alt text, caption), the summary."""
    tables = [t for t in dom.find("table")]
    rendered = [dom_table(t) for t in tables]
    for expected in markdown_tables((folder / "results.md").read_text()):
        assert expected in rendered, f"results.md table missing from the page: {expected[0]}"
    images = [img for img in dom.find("img") if img.attrs.get("id") != "probe-missing"]
    assert {img.attrs["src"] for img in images} == pictures_on_disk(folder)
    for img in images:
        with Image.open(folder / img.attrs["src"]) as picture:
            width = picture.width
        assert int(img.attrs["data-natural-width"]) == width, f"{img.attrs['src']} did not load"
        assert int(img.attrs["data-rendered-width"]) > 100, f"{img.attrs['src']} is not shown"
        assert len(img.attrs.get("alt", "")) > 10
        figure = img.ancestor("figure")
        assert figure is not None and figure.find("figcaption") and img.attrs["src"] in figure.text()
    probe = next(img for img in dom.find("img") if img.attrs.get("id") == "probe-missing")
    assert probe.attrs["data-natural-width"] == "0"  # the check above can see a picture that does not load
    summary = [t for t in tables if "summary" in t.attrs.get("class", "")]
    assert summary and summary[0].ancestor("section").attrs["id"] == "summary"
    check_summary(dom)
    # Every table's "Checkpoint selection:" line is on the page, under its table's title.
    lines = [line for line in (folder / "results.md").read_text().splitlines() if line.startswith("Checkpoint selection:")]
    shown = [p.text() for p in section_of(dom, "tables").find("p") if p.text().startswith("Checkpoint selection:")]
    assert len(shown) == len(lines)


def section_of(dom: Node, anchor: str) -> Node:
    return next(s for s in dom.find("section") if s.attrs.get("id") == anchor)


def check_summary(dom: Node, selection: str = "last") -> None:
    """Each summary table: per task, exactly the full table's headline columns in its order, and every cell
    the full table's cell of that method (its text, intervals and ≈ included), or — without a row."""
    full: dict[str, list[list[str]]] = {}
    title = None
    for node in [n for n in walk(section_of(dom, "tables")) if n.tag in ("h3", "table")]:
        if node.tag == "h3":
            title = node.text()
        else:
            full[title] = dom_table(node)
    for table in [t for t in dom.find("table") if "summary" in t.attrs.get("class", "")]:
        top, sub = [r for r in table.find("tr")][:2]
        tasks = [(th.text(), int(th.attrs.get("colspan", 1))) for th in top.find("th")[1:]]
        rows = dom_table(table)[2:]
        at = 1
        for task, span in tasks:
            expected = full[f"{task} — {selection} checkpoint"]
            picked = [j for j, h in enumerate(expected[0]) if j and h.split(" ")[0].rstrip("‡") in HEADLINE_TITLES]
            assert [h.text() for h in sub.find("th")[at - 1:at - 1 + span]] == [expected[0][j] for j in picked]
            by_method = {row[0]: row for row in expected[1:]}
            for row in rows:
                want = [by_method[row[0]][j] if row[0] in by_method else "—" for j in picked]
                assert row[at:at + span] == want, f"summary {task} {row[0]}"
            at += span
        assert at == len(rows[0])


def walk(node: Node) -> list[Node]:
    """`node`'s descendants in document order."""
    out = []
    for child in node.children:
        if isinstance(child, Node):
            out += [child] + walk(child)
    return out


def page_sections(dom: Node) -> list[str]:
    return [s.attrs.get("id") for s in dom.find("section")]


# --- a results folder written by report.write_results from real records and pictures ----------------

def record(method: str, seed: int, tasks: dict[str, tuple[float, float]], selection: str = "last",
           epoch: int = 3, widths: tuple[float, float, float] | None = None) -> dict:
    """`widths`: half-widths of the bootstrap intervals of FID, KID×10³ and SSIM(gt) (none: no intervals)."""
    def intervals(fid: float, ssim: float) -> dict:
        w_fid, w_kid, w_ssim = widths
        return {"fid": [fid - w_fid, fid + w_fid], "kid_mean": [(fid - w_kid) / 1000, (fid + w_kid) / 1000],
                "ssim_gt": [ssim - w_ssim, ssim + w_ssim]}

    return {"schema": "i2ibench.eval/1", "dataset": {"name": "toy", "split": "test"}, "method": method, "seed": seed,
            "epoch": epoch, "step": 10 * epoch, "checkpoint": {"selection": selection, "path": None}, "protocol": CARD,
            "metrics": {task: {"n_real": 5, "n_fake": 5, "fid": fid, "kid_mean": fid / 1000, "nn1_accuracy": 0.9,
                               "ssim_gt": ssim, "psnr_gt": 14.0, **({"intervals": intervals(fid, ssim)} if widths else {})}
                        for task, (fid, ssim) in tasks.items()},
            "unavailable": {}}


def write_run(root: Path, records: list[dict], colour: str) -> Path:
    run = root / records[0]["method"] / f"seed{records[0]['seed']}"
    for i, r in enumerate(records):
        files.write_json(run / "eval" / f"{r['checkpoint']['selection']}-{i}.json", r)
    for task in r["metrics"]:  # the test samples the evaluation callback writes: 4 images of 16 px in a row
        files.save_image(run / "test_samples" / f"{task}.inputs.png", Image.new("RGB", (64, 16), "gray"))
        files.save_image(run / "test_samples" / f"{task}.outputs.png", Image.new("RGB", (64, 16), colour))
    return run


@pytest.fixture(scope="module")
def toy_results(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    def both(fid: float, ssim: float) -> dict[str, tuple[float, float]]:
        return {"A2B": (fid, ssim), "B2A": (fid + 5, ssim - 0.1)}

    # A2B, with the intervals: FID cyclegan 52 ± 2.8 [47, 57] is clear of cut 62 [59, 65] (bold); KID
    # cyclegan [47, 57] overlaps cut [52, 72] (≈ on both); SSIM(gt) cut 0.5 [0.48, 0.52] is clear of
    # cyclegan 0.4 ± 0 [0.38, 0.42] (bold). 5 images: KID before FID‡.
    runs = []
    for seed, last_fid in ((0, 50.0), (1, 54.0)):  # cyclegan, 2 seeds: training curves, then the test record
        curve = [record("cyclegan", seed, both(fid, 0.4), "in-training", epoch=e) for e, fid in enumerate([90.0, 70.0])]
        runs.append(write_run(root / "runs", curve + [record("cyclegan", seed, both(last_fid, 0.4), widths=(5, 5, 0.02))],
                              "red"))
    runs.append(write_run(root / "runs", [record("cut", 0, {"A2B": (62.0, 0.5)}, "in-training", epoch=0),
                                          record("cut", 0, {"A2B": (62.0, 0.5)}, widths=(3, 10, 0.02))], "blue"))
    runs.append(write_run(root / "runs", [record("dualgan", 0, both(40.0, 0.6), widths=(1, 1, 0.01))],
                          "green"))  # its seed 1 failed
    out = root / "results" / "toy" / "smoke"
    report.write_results(out, runs, skipped={"stargan-v2": "needs 3 domains"},
                         failed={"dualgan": {1: "non-finite loss at step 7: gen=nan | disc=inf"}})
    return out  # report.write_results wrote report.html too


def test_write_results_writes_the_page_of_its_folder(toy_results):
    assert (toy_results / REPORT_NAME).read_text() == render(toy_results)


def test_every_table_and_picture_of_a_results_folder_is_in_the_page_and_loads(toy_results, tmp_path):
    assert (toy_results / "samples.png").is_file() and (toy_results / "plots" / "fid.png").is_file()
    dom = browser_dom(toy_results / "report.html", tmp_path)
    check_page(toy_results, dom)
    # The failed run is said before any number, as in results.md; the protocol card comes last.
    sections = page_sections(dom)
    assert sections[0] == "note-0" and "failed: non-finite loss at step 7: gen=nan | disc=inf" in dom.text()
    assert sections[1:5] == ["summary", "samples", "tables", "curves"] and sections[-1] == "protocol-card"
    # Summary: N and the headline metrics of both directions in the tables' order (KID before FID‡ at
    # 5 images), the cells of the full tables as written (intervals, ≈, bold kept); CUT translates one
    # way only: a dash where it has no row.
    summary = dom_table(dom.find("table")[[t.attrs.get("id") for t in dom.find("table")].index("summary-0")])
    assert summary[0] == ["method", "A2B", "B2A"]
    assert summary[1] == ["N", "KID×10³ ↓", "FID‡ ↓", "1-NN acc. →0.5", "SSIM(gt) ↑"] * 2
    rows = {row[0]: row[1:] for row in summary[2:]}
    assert rows["cyclegan"][:5] == ["5", "≈52 ± 2.8 [47, 57]", "52 ± 2.8 [47, 57]", "0.9 ± 0", "0.4 ± 0 [0.38, 0.42]"]
    assert rows["cyclegan"][7] == "57 ± 2.8 [52, 62]"  # B2A FID
    assert rows["cut"][:5] == ["5", "≈62 [52, 72]", "62 [59, 65]", "0.9", "0.5 [0.48, 0.52]"]
    assert rows["cut"][5:] == ["—"] * 5
    assert rows["dualgan"] == ["failed"] * 10  # no mean over the seed that survived (FID 40 would be best)
    summary_section = section_of(dom, "summary")
    bold = [s.text() for s in summary_section.find("strong")]
    assert sorted(bold) == ["0.5 [0.48, 0.52]", "52 ± 2.8 [47, 57]"]  # A2B SSIM(gt) (cut), FID (cyclegan); KID: a tie
    # The summary says which checkpoint its numbers come from, and why FID‡ is marked.
    notes = " ".join(p.text() for p in summary_section.find("p"))
    assert "Checkpoint selection: last : the weights at the end of training" in notes
    assert "‡ Fewer than 2048 images in a set" in notes
    # The full tables keep their selection lines too (one per table: A2B and B2A).
    shown = [p.text() for p in section_of(dom, "tables").find("p") if p.text().startswith("Checkpoint selection:")]
    assert len(shown) == 2
    card = {dt.text(): dd.text() for dt, dd in zip(dom.find("dt"), dom.find("dd"))}
    assert card["image_size"] == "64" and card["kid_subsets"] == "100"


def test_the_page_needs_no_script_no_network_and_is_written_atomically(toy_results):
    text = (toy_results / "report.html").read_text()
    assert "<script" not in text.lower()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text)  # every resource is in the folder
    assert not [p.name for p in toy_results.iterdir() if p.name.startswith(".")]  # no temp file left behind


def test_the_committed_sketch_photo_results_render_with_every_table_and_picture(tmp_path):
    folder = tmp_path / "sketch-photo" / "smoke"
    shutil.copytree(COMMITTED, folder, ignore=shutil.ignore_patterns("report.html"))
    dom = browser_dom(write_html_report(folder), tmp_path)
    check_page(folder, dom)
    summary = dom_table(dom.find("table")[0]) if dom.find("table")[0].attrs.get("id") == "summary-0" else None
    assert summary is not None and summary[0] == ["method", "A2B", "B2A"]
    methods = {row[0] for row in summary[2:]}
    data = json.loads((COMMITTED / "results.json").read_text())
    assert methods >= set(data["summary"]["last"]["A2B"]) | {"copy-input (reference)", "real-target (reference)"}


def test_the_committed_report_is_the_one_its_folder_gives():
    assert (COMMITTED / "report.html").read_text() == render(COMMITTED), (
        "results/sketch-photo/smoke/report.html is stale: rerun `i2ibench report results/sketch-photo/smoke`")


def test_a_bench_where_every_run_failed_still_gets_a_page_with_the_reasons(tmp_path):
    runs = [write_run(tmp_path / "runs", [record("cyclegan", 0, {"A2B": (50.0, 0.4)}, "in-training", epoch=0)], "red")]
    out = tmp_path / "results" / "toy" / "smoke"
    report.write_results(out, runs, skipped={}, failed={"cyclegan": {0: "killed by signal 9"}})
    text = write_html_report(out).read_text()
    assert "failed: killed by signal 9" in text and 'id="summary"' not in text
    assert text.count("<h2>Protocol card</h2>") == 1 and 'src="plots/fid.png"' in text  # the curve up to the failure


def test_a_folder_without_results_md_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"results\.md not found.*i2ibench bench"):
        write_html_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_the_report_verb_writes_the_page_and_a_folder_without_results_md_is_one_line_exit_2(toy_results, tmp_path):
    folder = tmp_path / "toy" / "smoke"
    shutil.copytree(toy_results, folder, ignore=shutil.ignore_patterns(REPORT_NAME))
    done = subprocess.run([sys.executable, "-m", "i2ibench", "report", str(folder)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(folder / REPORT_NAME)
    assert (folder / REPORT_NAME).read_text() == render(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    done = subprocess.run([sys.executable, "-m", "i2ibench", "report", str(empty)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and re.fullmatch(
        r"i2ibench: error: .*results\.md not found.*i2ibench bench.*\n", done.stderr)
    assert not (empty / REPORT_NAME).exists()
