"""The book as one PDF (_build/html/normbook.pdf, written by `make pdf`):
its pages, its bookmarks, its math and its text.

Run by `make pdf` after it prints the book (not part of `make test`, which
runs before the book exists). Checks: a sane number of A4 pages; one
bookmark per page of _toc.yml, in its order, titled as the page, with the
page's sections under it, each opening on the page that shows its heading;
no MathJax error and no TeX left untypeset in the text; text that pypdf can
extract, Chinese included (no radicals in place of ideographs); links that
stay inside the PDF, none to a file of the machine that built it.
"""
import html
import os
import re
import unicodedata
from pathlib import Path

import pytest
import yaml
from bs4 import BeautifulSoup
from pypdf import PdfReader

ROOT = Path(__file__).resolve().parents[2]
# BOOK_HTML: check another build; BOOK_TOC: the order it was built in
HTML = Path(os.environ.get("BOOK_HTML", ROOT / "_build" / "html"))
TOC = Path(os.environ.get("BOOK_TOC", ROOT / "_toc.yml"))
PDF = HTML / "normbook.pdf"
# About half of what the book prints today (236 pages): a print that lost
# chapters or most of their pages falls below it.
MIN_PAGES = 120
A4 = (595, 842)  # points, rounded

if not PDF.exists():
    pytest.skip(f"no PDF at {PDF}: run `make pdf` after `make book`",
                allow_module_level=True)


def toc_docs():
    toc = yaml.safe_load(TOC.read_text(encoding="utf-8"))
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [entry["file"] for entry in part.get("chapters", [])]
    files += [entry["file"] for entry in toc.get("chapters", [])]
    return [re.sub(r"\.(md|ipynb)$", "", name) for name in files]


def title_pattern(heading):
    """A regex for a heading's text with its math as a wildcard (the PDF
    gives math as glyphs, the HTML as TeX); its permalink left out."""
    text = "".join(
        "\0" if piece.find_parent("span", class_="math") else piece
        for piece in heading.find_all(string=True)
        if not piece.find_parent("a", class_="headerlink"))
    return ".+?".join(re.escape(" ".join(part.split()))
                      for part in text.split("\0"))


def expected_pages():
    """[(docname, chapter title pattern, [section title patterns])]."""
    pages = []
    for doc in toc_docs():
        soup = BeautifulSoup((HTML / f"{doc}.html").read_text(
            encoding="utf-8"), "html.parser")
        top = soup.select_one("article.bd-article section")
        sections = [title_pattern(h2) for h2 in top.find_all("h2")
                    if h2.parent.name == "section"]
        pages.append((doc, title_pattern(top.find("h1")), sections))
    return pages


def squeeze(text):
    """Text compared without its whitespace and ligatures."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))


@pytest.fixture(scope="module")
def reader():
    return PdfReader(PDF)


@pytest.fixture(scope="module")
def outline(reader):
    """[(title, page index, [(title, page index)])] of the bookmarks."""
    entries = []
    for item in reader.outline:
        if isinstance(item, list):
            entries[-1][2].extend(
                (child.title, reader.get_destination_page_number(child))
                for child in item if not isinstance(child, list))
        else:
            entries.append((item.title,
                            reader.get_destination_page_number(item), []))
    return entries


@pytest.fixture(scope="module")
def texts(reader):
    """Per page: pypdf's text, and every piece of text it decodes outside
    code (monospace) fonts, math included (pypdf leaves out of the former
    the glyphs MathJax draws mirrored)."""
    pages = []
    for page in reader.pages:
        pieces = []

        def prose(text, matrix, text_matrix, font, size):
            if font is None or "Mono" not in str(font.get("/BaseFont")):
                pieces.append(text)
        text = page.extract_text(visitor_text=prose)
        pages.append((text, "".join(pieces)))
    return pages


def test_enough_a4_pages(reader):
    assert len(reader.pages) >= MIN_PAGES, (
        f"{len(reader.pages)} pages, fewer than {MIN_PAGES}")
    sizes = {(round(float(page.mediabox.width)),
              round(float(page.mediabox.height))) for page in reader.pages}
    assert sizes <= {A4, (A4[0] + 1, A4[1])}, f"page sizes {sizes}"


def test_a_bookmark_per_page_of_the_toc_in_its_order(outline):
    expected = expected_pages()
    titles = [title for title, _, _ in outline]
    assert len(titles) == len(expected), (
        f"{len(titles)} bookmarks for {len(expected)} pages: {titles}")
    for (doc, pattern, _), title in zip(expected, titles):
        assert re.fullmatch(pattern, title), f"{doc}: bookmark {title!r}"
    starts = [page for _, page, _ in outline]
    assert starts == sorted(set(starts)), f"chapter start pages {starts}"


def test_sections_under_their_chapter(outline, reader):
    ends = [page for _, page, _ in outline[1:]] + [len(reader.pages)]
    for (doc, _, patterns), (title, start, sections), end in zip(
            expected_pages(), outline, ends):
        found = [section for section, _ in sections]
        assert len(found) == len(patterns), (
            f"{title}: sections {found}, expected {patterns}")
        for pattern, section in zip(patterns, found):
            assert re.fullmatch(pattern, section), f"{doc}: {section!r}"
        pages = [page for _, page in sections]
        assert pages == sorted(pages) and all(
            start <= page < end for page in pages), (
            f"{title}: section pages {pages} outside {start}..{end - 1}")
    assert sum(len(sections) for _, _, sections in outline) >= 50


def test_each_bookmark_opens_on_its_heading(outline, texts):
    wrong = []
    for title, page, sections in outline:
        for heading, at in [(title, page)] + sections:
            words = [squeeze(part) for part in re.split(
                r"[^\w’'“”.,:;?()-]+", heading) if len(part) > 2]
            if not all(word in squeeze(texts[at][0]) for word in words):
                wrong.append(f"{heading!r} on page {at + 1}")
    assert not wrong, f"bookmarks whose page lacks the heading: {wrong}"


def test_no_math_input_error(texts):
    errors = [page + 1 for page, (_, prose) in enumerate(texts)
              if "Mathinputerror" in squeeze(prose)]
    assert not errors, f"MathJax's 'Math input error' on pages {errors}"


def test_no_tex_left_as_tex(texts):
    """A TeX error message of MathJax names the command, backslash and all,
    an unknown macro shows as itself, and math MathJax never saw stays TeX:
    in prose and math (code is left out) no word begins with a backslash."""
    raw = {}
    for page, (_, prose) in enumerate(texts):
        for match in re.finditer(r"\\[A-Za-z]{2,}", prose):
            raw.setdefault(page + 1, " ".join(
                prose[max(0, match.start() - 40):match.end() + 40].split()))
    assert not raw, f"TeX the reader sees as TeX, by page: {raw}"


def test_text_extracts_from_every_chapter(outline, texts):
    for title, start, sections in outline:
        words = re.findall(r"[A-Za-z]{3,}|[\u4e00-\u9fff]", texts[start][0])
        assert len(words) >= 20, f"{title}: page {start + 1} gives {words}"


def test_chinese_text_extracts_as_ideographs(outline, texts):
    titles = [title for title, _, _ in outline]
    chinese = [i for i, title in enumerate(titles)
               if re.search(r"[\u4e00-\u9fff]", title)]
    assert chinese, f"no Chinese page among {titles}"
    start, end = outline[chinese[0]][1], outline[chinese[0] + 1][1]
    text = "".join(texts[page][0] for page in range(start, end))
    assert "面试" in text and "归一化" in text, text[:300]
    assert len(re.findall(r"[\u4e00-\u9fff]", text)) >= 500
    radicals = sorted({char for page, _ in texts
                       for char in re.findall(r"[\u2e80-\u2fdf]", page)})
    assert not radicals, f"radicals where ideographs should be: {radicals}"


def test_links_stay_in_the_pdf(reader):
    names = set(reader.named_destinations)
    internal, local, dangling = 0, [], []
    for number, page in enumerate(reader.pages):
        for annotation in page.get("/Annots") or []:
            annotation = annotation.get_object()
            uri = str(annotation.get("/A", {}).get("/URI", ""))
            dest = annotation.get("/Dest")
            if uri.startswith("file:"):
                local.append(f"page {number + 1}: {uri}")
            elif dest is not None:
                internal += 1
                if isinstance(dest, str) and dest not in names:
                    dangling.append(f"page {number + 1}: {dest}")
    assert not local, f"links to files of the build machine: {local[:5]}"
    assert not dangling, f"links to no destination: {dangling[:5]}"
    assert internal >= 100, f"{internal} cross-references inside the PDF"


def test_pdf_is_titled(reader):
    config = yaml.safe_load((ROOT / "_config.yml").read_text("utf-8"))
    assert reader.metadata.title == html.unescape(config["title"])
