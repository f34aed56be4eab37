"""report.html: one static page per results folder (results/<dataset>/<protocol>/) for a browser.

It is rendered from the files `report.write_results` leaves in the folder, not from the records:
the tables come from results.md, so every cell (mean ± std, intervals, bold, failed, n/a, †) reads
exactly as in the Markdown tables, whatever report.py decides to put in a cell; the images are every
picture in the folder (sample strips beside results.md, training curves under plots/), referenced by
relative paths so the page works from a checkout, a copied folder or a CI artifact. No server, no
JavaScript, no stylesheet or font from the network: the standard library and a small inline CSS.

Order: summary (method x headline metrics, every task, one checkpoint selection, with that
selection's rule), sample strips, the full per-task tables (each with its "Checkpoint selection:"
line), training curves, the notes of results.md (failed runs first, as there), the protocol card.

The summary finds its columns by `report.column_key` of each header, not by header text or position:
report.py decorates headers (`FID‡` below 2048 images) and reorders them (KID before FID then), and
a page that matched titles would silently drop or misplace a column when that changes.
"""

from __future__ import annotations

import html
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from i2ibench import files
from i2ibench.bench.report import ARROW, COLUMNS, SELECTIONS, column_key
from i2ibench.errors import UserError

REPORT_NAME = "report.html"
# Headline columns of the summary, by record key (README's compact tables); shown in the order each
# per-task table puts them (KID before FID below 2048 images). N (the images evaluated) says how far
# the distribution metrics can be trusted; they say how close to the target domain, SSIM(gt) how
# close to the paired ground truth.
HEADLINE = ("n_fake", "fid", "kid_mean", "nn1_accuracy", "ssim_gt")
SELECTION_LINE = "Checkpoint selection:"  # results.md's paragraph under each per-task title
RANK_DEFICIENT = "‡"  # results.md's FID mark below 2048 images, and the paragraph that explains it
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg")
TASK_HEADING = re.compile(r"^(?P<task>.+) — (?P<selection>.+) checkpoint$")  # results.md's per-task table titles
PROTOCOL_CARD = "Protocol card"
WORDS = {"lower": "lower is better", "higher": "higher is better", "half": "best at 0.5"}

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0 auto;
max-width:1400px;padding:1em 2em;color:#1b1b1b;background:#fff}
h1{font-size:1.6em;margin:.3em 0}h2{font-size:1.3em;border-bottom:1px solid #ccc;margin-top:1.8em}
h3{font-size:1.05em;margin:1.4em 0 .4em}nav{background:#f4f6f8;padding:.4em .8em;border-radius:4px}
nav a{margin-right:1.2em}.files a{margin-right:1em}.note{color:#444;max-width:75em}
.scroll{overflow-x:auto;margin:.4em 0 1em}table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #d4d4d4;padding:3px 7px;white-space:nowrap}th{background:#eef1f4}
td{text-align:right;font-variant-numeric:tabular-nums}td:first-child,th:first-child{text-align:left}
tbody tr:nth-child(even){background:#fafafa}tr.reference td{color:#555;background:#f3f3ee}
th.task{text-align:center}table.summary td:first-child{position:sticky;left:0;background:inherit}
table.summary tbody tr{background:#fff}table.summary tbody tr:nth-child(even){background:#fafafa}
table.summary tr.reference{background:#f3f3ee}td.text{text-align:left;white-space:normal}
figure{margin:.6em 0 1.4em;display:inline-block;vertical-align:top}figure img{max-width:100%;height:auto;
border:1px solid #ddd}figcaption{font-size:13px;color:#444;max-width:60em}
.curves{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:0 1.2em}.curves figure{margin:.6em 0}
dl.card{display:grid;grid-template-columns:max-content 1fr;gap:2px 1em}
dl.card dt{font-weight:600}dl.card dd{margin:0;color:#333}code{background:#f2f2f2;padding:0 3px}
"""


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    """A `## heading` of results.md and its blocks: str (paragraph), Table, or list items (indent, text)."""

    title: str
    blocks: list = field(default_factory=list)

    @property
    def task_table(self) -> tuple[str, str, Table] | None:
        """(task, selection, table) when this is a per-task table of results.md."""
        match = TASK_HEADING.match(self.title)
        tables = [b for b in self.blocks if isinstance(b, Table)]
        return (match["task"], match["selection"], tables[0]) if match and tables else None


# --- results.md -> sections -------------------------------------------------------------------------
# A small reader for the Markdown that report.markdown writes (headings, paragraphs, pipe tables,
# nested "-" lists, **bold**, *italics*, `code`): the project's dependencies have no Markdown renderer
# (python-markdown / markdown-it are not among them), and adding one for a page of tables is not worth
# a dependency; this subset is all results.md uses.

def split_row(line: str) -> list[str]:
    """The cells of a pipe-table row; `\\|` is a pipe inside a cell (report.cell_text escapes them)."""
    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", inner)]


def is_separator(line: str) -> bool:
    return bool(re.fullmatch(r"\|?(\s*:?-+:?\s*\|)*\s*:?-+:?\s*\|?", line.strip()))


def parse_markdown(text: str) -> tuple[str, list[Section]]:
    """(title, sections): the `# ` title and each `## ` section; text before the first `## ` is the
    section with an empty title."""
    title, sections = "", [Section("")]
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("# "):
            title = line[2:].strip()
        elif line.startswith("## "):
            sections.append(Section(line[3:].strip()))
        elif line.lstrip().startswith("|") and i + 1 < len(lines) and is_separator(lines[i + 1]):
            header, rows = split_row(line), []
            i += 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append(split_row(lines[i]))
                i += 1
            sections[-1].blocks.append(Table(header, rows))
            continue
        elif re.match(r"\s*- ", line):
            items = []
            while i < len(lines) and re.match(r"\s*- ", lines[i]):
                indent = len(lines[i]) - len(lines[i].lstrip())
                items.append((indent, lines[i].lstrip()[2:].strip()))
                i += 1
            sections[-1].blocks.append(items)
            continue
        elif line.strip():
            paragraph = [line.strip()]
            while i + 1 < len(lines) and lines[i + 1].strip() and not re.match(r"\s*(#|\||- )", lines[i + 1]):
                i += 1
                paragraph.append(lines[i].strip())
            sections[-1].blocks.append(" ".join(paragraph))
        i += 1
    return title, sections


def inline(text: str) -> str:
    """Escaped HTML of one Markdown line: `code`, **bold**, *italics*, [text](link)."""
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*(?=\S)(.+?)(?<=\S)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"(?<![\w*])\*(?=[^\s*])([^*]+?)(?<=\S)\*(?![\w*])", r"<em>\1</em>", out)
    return re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", lambda m: f'<a href="{html.escape(m[2])}">{m[1]}</a>', out)


# --- sections -> HTML -------------------------------------------------------------------------------

def is_reference(label: str) -> bool:
    """A reference row (copy-input, real-target): labelled "(reference)" by report.markdown."""
    return "(reference)" in label


def row_start(label: str) -> str:
    return '<tr class="reference">' if is_reference(label) else "<tr>"


def table_html(table: Table, text_columns: bool = False) -> str:
    """A table in a horizontally scrolling box; reference rows get their own class (greyed)."""
    head = "".join(f"<th scope=\"col\">{inline(c)}</th>" for c in table.header)
    cell = "<td class=\"text\">{}</td>" if text_columns else "<td>{}</td>"
    body = "".join(
        row_start(row[0]) + "".join(cell.format(inline(c)) for c in row) + "</tr>" for row in table.rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def list_html(items: list[tuple[int, str]]) -> str:
    out, depth = [], []
    for indent, text in items:
        while depth and indent < depth[-1]:
            out.append("</li></ul>")
            depth.pop()
        if depth and indent == depth[-1]:
            out.append("</li>")
        else:
            out.append("<ul>")
            depth.append(indent)
        out.append(f"<li>{inline(text)}")
    out.extend("</li></ul>" for _ in depth)
    return "".join(out)


def blocks_html(blocks: list, text_tables: bool = False) -> str:
    parts = []
    for block in blocks:
        if isinstance(block, Table):
            parts.append(table_html(block, text_columns=text_tables))
        elif isinstance(block, list):
            parts.append(list_html(block))
        else:
            parts.append(f'<p class="note">{inline(block)}</p>')
    return "\n".join(parts)


def card_html(section: Section) -> str:
    """The protocol card's "- key: value" lines as a definition list; anything else as in results.md."""
    parts = []
    for block in section.blocks:
        if isinstance(block, list) and all(": " in text for _, text in block):
            pairs = "".join(f"<dt>{inline(text.split(': ', 1)[0])}</dt><dd>{inline(text.split(': ', 1)[1])}</dd>"
                            for _, text in block)
            parts.append(f'<dl class="card">{pairs}</dl>')
        else:
            parts.append(blocks_html([block]))
    return "\n".join(parts)


def task_groups(tasks: list[tuple[str, Table]]) -> list[list[tuple[str, Table]]]:
    """Tasks joined when they share a method (not counting reference rows), biggest group first: one
    summary table per group, so that a method with tasks of its own (StarGAN v2's latent- and
    reference-guided ones) gets a small table instead of a wide one that is mostly empty."""
    groups: list[tuple[set[str], list[tuple[str, Table]]]] = []
    for task, table in tasks:
        methods = {row[0] for row in table.rows if not is_reference(row[0])}
        joined = [g for g in groups if g[0] & methods]
        merged = (methods.union(*(g[0] for g in joined)), [t for g in joined for t in g[1]] + [(task, table)])
        groups = [g for g in groups if g not in joined] + [merged]
    order = [task for task, _ in tasks]  # results.md's task order inside a group
    return [sorted(g[1], key=lambda t: order.index(t[0]))
            for g in sorted(groups, key=lambda g: -len(g[0]))]


def summary_tables(tasks: list[Section], sections: list[Section]) -> tuple[str, list[str], list[str]] | None:
    """(selection, [HTML table], [paragraph]) of method x (task, headline column): the cells of the
    per-task tables as they are, for the `last` selection (else the first one present), then the
    "Checkpoint selection:" lines of those tables (one per distinct rule) and, when a headline
    header carries ‡, results.md's paragraph that explains it."""
    found = [s.task_table for s in tasks]
    selections = [s for _, s, _ in found]
    if not selections:
        return None
    selection = next((s for s in SELECTIONS if s in selections), selections[0])
    chosen = [(task, table) for task, s, table in found if s == selection]
    rules = []
    for section, (_, s, _) in zip(tasks, found):
        for block in section.blocks:
            if s == selection and isinstance(block, str) and block.startswith(SELECTION_LINE) and block not in rules:
                rules.append(block)
    if any(RANK_DEFICIENT in h for _, table in chosen for h, _ in headline_columns(table)):
        rules += [b for s in sections for b in s.blocks if isinstance(b, str) and b.startswith(RANK_DEFICIENT)][:1]
    return selection, [summary_table(group, i) for i, group in enumerate(task_groups(chosen))], rules


def headline_columns(table: Table) -> list[tuple[str, int]]:
    """(header as written, column index) of the table's headline columns, in the table's order."""
    return [(h, j) for j, h in enumerate(table.header) if j and column_key(h) in HEADLINE]


def summary_table(tasks: list[tuple[str, Table]], number: int) -> str:
    columns: list[tuple[str, list[tuple[str, int]]]] = []  # task -> [(header text, column index)]
    methods: list[str] = []
    cells: dict[tuple[str, str, str], str] = {}
    for task, table in tasks:
        picked = headline_columns(table)
        columns.append((task, picked))
        for row in table.rows:
            if row[0] not in methods:
                methods.append(row[0])
            for header, j in picked:
                cells[(row[0], task, header)] = row[j] if j < len(row) else ""
    methods.sort(key=is_reference)  # reference rows last, as in every per-task table
    top = "<th rowspan=\"2\" scope=\"col\">method</th>" + "".join(
        f'<th class="task" colspan="{max(len(picked), 1)}" scope="colgroup">{inline(task)}</th>'
        for task, picked in columns)
    sub = "".join(f"<th scope=\"col\">{inline(h)}</th>" for _, picked in columns for h, _ in picked)
    body = "".join(
        f"{row_start(m)}<td>{inline(m)}</td>"
        + "".join(f"<td>{inline(cells.get((m, task, h), '—'))}</td>" for task, picked in columns for h, _ in picked)
        + "</tr>" for m in methods)
    return (f'<div class="scroll"><table class="summary" id="summary-{number}"><thead><tr>{top}</tr><tr>{sub}</tr>'
            f"</thead><tbody>{body}</tbody></table></div>")


# --- images -----------------------------------------------------------------------------------------

def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of a PNG from its header (for the img attributes: no layout jump), else None."""
    with path.open("rb") as f:
        head = f.read(24)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return struct.unpack(">II", head[16:24])
    return None


def figure_html(out: Path, path: Path, alt: str, caption: str, link: bool = True) -> str:
    rel = path.relative_to(out).as_posix()
    src = html.escape(quote(rel))
    size = image_size(path)
    dims = f' width="{size[0]}" height="{size[1]}"' if size else ""
    img = f'<img src="{src}" alt="{html.escape(alt)}"{dims} loading="eager">'
    if link:
        img = f'<a href="{src}">{img}</a>'
    return f"<figure>{img}<figcaption>{inline(caption)} (<code>{html.escape(rel)}</code>)</figcaption></figure>"


def pictures(out: Path) -> tuple[list[Path], list[Path]]:
    """(sample strips and other pictures, training curves under plots/), each sorted."""
    found = sorted(p for p in out.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(out).parts))  # not temp files
    curves = [p for p in found if p.relative_to(out).parts[0] == "plots"]
    order = [key for key, *_ in COLUMNS]  # the curves in the tables' column order, others after them
    curves.sort(key=lambda p: (order.index(p.stem) if p.stem in order else len(order), p.as_posix()))
    return [p for p in found if p not in curves], curves


def curve_text(path: Path) -> tuple[str, str]:
    """(alt, caption) of a training-curve plot, named after its metric column when it is one."""
    metric = {key: (title, direction) for key, title, direction, _ in COLUMNS}.get(path.stem)
    name = f"{metric[0]} ({WORDS[metric[1]]})" if metric else path.stem
    return (f"Training curve of {name}: one line per method and task over epochs",
            f"**{name}** over training: the in-training evaluations, mean over seeds, one line per method and task")


def sample_text(path: Path, dataset: str) -> tuple[str, str]:
    if path.name == "samples.png":
        return (f"Sample strip of {dataset}: per task, a row of test inputs, then a row of each method's translations",
                "Sample strip: per task, a row of test inputs (labelled with the task's name), then each method's "
                "translations of the same images (first seed), one row per method")
    return f"Picture {path.name} of {dataset}", f"{path.name}"


# --- the page ---------------------------------------------------------------------------------------

def render(out: Path) -> str:
    """The HTML text of report.html for a results folder (see the module docstring)."""
    markdown_file = out / "results.md"
    if not markdown_file.is_file():
        raise UserError(f"{markdown_file} not found: `i2ibench report` needs a results folder written by "
                        "`i2ibench bench` (results/<dataset>/<protocol>/)")
    title, sections = parse_markdown(markdown_file.read_text())
    title = title or f"{out.parent.name} — {out.name}"
    intro = sections[0]
    tasks = [s for s in sections[1:] if s.task_table]
    first_task = sections.index(tasks[0]) if tasks else len(sections)
    # e.g. "Failed runs": said before any number, as in results.md
    before = [s for s in sections[1:first_task] if s.title != PROTOCOL_CARD]
    after = [s for s in sections[first_task:] if not s.task_table and s.title != PROTOCOL_CARD]
    card = next((s for s in sections if s.title == PROTOCOL_CARD), None)
    samples, curves = pictures(out)
    dataset = title.split(" — ")[0]

    body: list[str] = []
    nav: list[tuple[str, str]] = []

    def section(anchor: str, heading: str, content: str) -> None:
        nav.append((anchor, heading))
        body.append(f'<section id="{anchor}"><h2>{html.escape(heading)}</h2>\n{content}</section>')

    for i, s in enumerate(before):
        section(f"note-{i}", s.title, blocks_html(s.blocks, text_tables=True))
    summary = summary_tables(tasks, sections)
    if summary:
        selection, tables, notes = summary
        words = ", ".join(["N"] + [f"{name} {ARROW[d]}" for key, name, d, _ in COLUMNS if key in HEADLINE])
        section("summary", "Summary", f'<p class="note">Headline columns ({html.escape(words)}; KID before FID '
                f"below 2048 images, as in the full tables) of every task, test split, {html.escape(selection)} "
                "checkpoint; cells as written in the full tables below, uncertainty included (bold and ≈ as the "
                "legend above says; reference rows are never ranked; — where a method has no row in that task's "
                "table, e.g. a method that translates one way only).</p>\n" + "\n".join(tables)
                + "".join(f'\n<p class="note">{inline(n)}</p>' for n in notes))
    if samples:
        section("samples", "Sample strips",
                "\n".join(figure_html(out, p, *sample_text(p, dataset)) for p in samples))
    if tasks:
        tables = "\n".join(f'<h3 id="table-{i}">{inline(s.title)}</h3>\n{blocks_html(s.blocks)}'
                           for i, s in enumerate(tasks))
        section("tables", "Full per-task tables", tables)
    if curves:
        section("curves", "Training curves", '<div class="curves">'
                + "\n".join(figure_html(out, p, *curve_text(p)) for p in curves) + "</div>")
    for i, s in enumerate(after):
        section(f"notes-{i}", s.title, blocks_html(s.blocks, text_tables=True))
    if card:
        section("protocol-card", PROTOCOL_CARD, card_html(card))

    links = " ".join(f'<a href="{name}">{name}</a>' for name in ("results.md", "results.csv", "results.json")
                     if (out / name).is_file())
    contents = "".join(f'<a href="#{a}">{html.escape(h)}</a>' for a, h in nav)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<h1>{inline(title)}</h1>\n<p class=\"files\">Files of this folder: {links}</p>\n"
            f"<nav>{contents}</nav>\n{blocks_html(intro.blocks)}\n" + "\n".join(body)
            + "\n<p class=\"note\"><small>Written by <code>i2ibench report</code> from the files of this folder; "
              "rerun it after editing them.</small></p>\n</body>\n</html>\n")


def write_html_report(out: Path) -> Path:
    """Write `out`/report.html (atomically) from the results folder `out`; returns its path."""
    out = Path(out)
    path = out / REPORT_NAME
    files.write_text(path, render(out))
    return path
