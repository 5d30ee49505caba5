"""The whole built book as one PDF: _build/html/normbook.pdf, in toc order,
with a bookmark per chapter and per section.

    python tools/book_pdf.py [--html _build/html] [--toc _toc.yml]
                             [--keep-html]      (make pdf, after make book)

How: the pages of _build/html, in the order of _toc.yml, are joined into one
HTML document (each page's article, its ids prefixed with the page's name and
its links turned into links within the document), which headless Chromium
loads, typesets with the book's own MathJax and prints with the theme's print
stylesheet (Page.printToPDF over the DevTools protocol, the driver of the
browser test). pypdf then writes the bookmarks: Chromium leaves a named
destination at every heading a link points to, and every heading carries its
own link, so each bookmark opens at its heading's page and height.

Why one document and not one PDF per page merged afterwards: page numbers run
through the book, a cross-reference to another chapter is a link inside the
PDF, and MathJax typesets once.

Why not LaTeX (`jupyter-book build --builder pdflatex`): CI would install TeX
Live (XeLaTeX, the LaTeX extras, fonts, latexmk and, for the Chinese page,
xeCJK: 0.5 to 1.4 GB of Debian packages as `apt-get -s` counts them, with or
without recommends), the book's MathJax macros and notebook outputs would go
through a second typesetter (nbconvert's templates, LaTeX's math), and its
pages would look unlike the HTML the browser test checks. The browser prints
what the HTML shows, with the Chromium and the CJK font that .ci/run already
installs for the browser test, in about 20 s.
"""
import argparse
import base64
import html
import importlib
import io
import logging
import posixpath
import re
import shutil
import sys
import time
import unicodedata
from pathlib import Path
from urllib.parse import unquote, urlsplit

import yaml
from bs4 import BeautifulSoup
from pypdf import PdfReader, PdfWriter
from pypdf.generic import Fit

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
PDF_NAME = "normbook.pdf"     # intro.md links to it by this name
JOINED = "_book_pdf.html"     # "_": the browser test leaves it alone
A4 = (8.27, 11.69)            # inches
MARGIN = 0.55                 # inches
SCALE = 0.9                   # text at 10.8 pt; 79 characters of code fit
TIMEOUT = 600                 # seconds for the joined book to load and print

# Noto CJK draws a radical and its ideograph (U+2FAF and U+9762, both 面)
# with one glyph, and Chromium's PDF maps that glyph back to the radical: the
# text would copy and search as radicals. Kangxi radicals fold to their
# ideograph by NFKC; these (radical, ideograph) pairs do not, and were read
# off Noto Sans CJK SC's cmap (glyphs shared with an ideograph).
RADICALS = dict(zip(*[iter(
    "⺂乛⺃乚⺅亻⺉刂⺋㔾⺏尣⺐尢⺒巳⺓幺⺔彑⺕彐⺖忄⺘扌⺙攵⺛旡⺞歺⺠民⺡氵"
    "⺣灬⺤爫⺦丬⺨犭⺭礻⺯糹⺰纟⺱罓⺳㓁⺹耂⺺肀⺾艹⻂衤⻅见⻆角⻈讠⻉贝"
    "⻋车⻌辶⻐钅⻑長⻒镸⻓长⻔门⻖阝⻘青⻙韦⻚页⻛风⻜飞⻝食⻟飠⻠饣"
    "⻢马⻣骨⻤鬼⻥鱼⻦鸟⻧卤⻨麦⻩黄⻪黾⻫斉⻬齐⻮齿⻯竜⻰龙⻱龜⻲亀"
    "⼾户")] * 2))

# Print-only rules on top of the theme's print stylesheet.
PRINT_CSS = """
@media print {
  /* one column as wide as the page; the theme indents it by 2rem */
  .bd-main .bd-content { margin-left: 0 !important; }
  /* the theme hides the first h1 (its print header repeats it) */
  .bd-main .bd-content .bd-article section.pdf-page h1 {
    display: block !important; margin-top: 0;
  }
  section.pdf-page { break-before: page; }
  section.pdf-page:first-child { break-before: auto; }
  p.pdf-part {
    color: var(--pst-color-muted); font-size: 1.1em; letter-spacing: .05em;
    margin: 0 0 1.5em 0; text-transform: uppercase;
  }
  /* a block shorter than a third of a page moves to the next page whole
     (pdf-keep, set by KEEP_SHORT_BLOCKS); a longer one may split, rather
     than leave a gap or an empty code box at the foot of a page */
  #main-content div.highlight, #main-content div[class*=highlight-],
  #main-content .admonition, #main-content table { break-inside: auto; }
  #main-content .pdf-keep { break-inside: avoid; }
  /* a line wider than the column wraps instead of being cut off */
  pre { white-space: pre-wrap !important; overflow: visible !important; }
  .sd-summary-state-marker, button.toggle-button { display: none !important; }
  /* a shadow prints as a 300 dpi image: 200 of them tripled the file */
  #main-content *, #main-content *::before, #main-content *::after {
    box-shadow: none !important;
  }
}
"""
# Runs in the joined page after MathJax: marks the blocks to keep whole.
KEEP_SHORT_BLOCKS = """
(keep => {
  const blocks = document.querySelectorAll('article :is(div.cell_input, ' +
      'div.cell_output div.output, div.highlight, div[class*=highlight-], ' +
      '.admonition, details, ' +
      'figure, table, div.math)');
  for (const block of blocks) {
    if (block.getBoundingClientRect().height < keep) {
      block.classList.add('pdf-keep');
    }
  }
  return blocks.length;
})(%d)
"""
FOOTER = ('<div style="font-size: 8px; width: 100%; margin: 0 {m}in; '
          'display: flex; justify-content: space-between; color: #666; '
          'font-family: sans-serif;"><span>{title}</span><span>'
          '<span class="pageNumber"></span> / <span class="totalPages"></span>'
          '</span></div>')


def toc_pages(toc_file=ROOT / "_toc.yml"):
    """[(docname, part caption or None)] in the order of the toc."""
    toc = yaml.safe_load(Path(toc_file).read_text(encoding="utf-8"))
    pages = [(toc["root"], None)]
    for part in toc.get("parts", []):
        pages += [(entry["file"], part.get("caption"))
                  for entry in part.get("chapters", [])]
    pages += [(entry["file"], None) for entry in toc.get("chapters", [])]
    return [(re.sub(r"\.(md|ipynb)$", "", doc), caption)
            for doc, caption in pages]


def anchor(doc, fragment=""):
    """The id in the joined document of `fragment` on page `doc` (the page
    itself for no fragment); only characters a PDF name keeps as they are."""
    name = doc.replace("/", ".") + ("--" + unquote(fragment) if fragment
                                    else "")
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def plain_tex(tex):
    """Inline TeX as plain text for a bookmark: Greek letters as letters,
    other commands by name (\\(\\epsilon\\) -> ε)."""
    def letter(match):
        if match[1] in ("mathrm", "mathbf", "operatorname", "text"):
            return ""
        try:
            case = "CAPITAL" if match[1][0].isupper() else "SMALL"
            return unicodedata.lookup(f"GREEK {case} LETTER {match[1]}")
        except KeyError:
            return match[1]
    tex = re.sub(r"^\\\(|\\\)$", "", tex.strip())
    return re.sub(r"\\([A-Za-z]+)\s*", letter, tex).replace("{", "") \
        .replace("}", "")


def heading_text(heading):
    """A heading's text, its math as plain text, without its permalink."""
    parts = []
    for piece in heading.find_all(string=True):
        if piece.find_parent("a", class_="headerlink"):
            continue
        math = piece.find_parent("span", class_="math")
        parts.append(plain_tex(piece) if math else piece)
    return " ".join("".join(parts).split())


def target_heading(soup, heading):
    """Give a heading an id of its own and point its permalink at it, so
    that Chromium leaves a named destination at the heading itself (its
    section can begin on the page before, where the heading would not fit);
    returns the id."""
    name = heading.parent["id"] + ".heading"
    heading["id"] = name
    link = heading.find("a", class_="headerlink")
    if link is None:
        link = soup.new_tag("a")
        link["class"] = "headerlink"
        heading.append(link)
    link["href"] = "#" + name
    return name


def rewrite_page(doc, soup, docs):
    """Make page `doc`'s article fit into the joined document: ids prefixed,
    links to the book's pages pointed inside it, image paths from the root,
    solutions and answers unfolded (a PDF cannot fold), scripts dropped.
    Returns the article's children."""
    article = soup.select_one("article.bd-article")
    base = posixpath.dirname(doc)
    for script in article.find_all("script"):
        script.decompose()
    for element in article.find_all(id=True):
        element["id"] = anchor(doc, element["id"])
    for link in article.find_all("a", href=True):
        parts = urlsplit(link["href"])
        if parts.scheme or parts.netloc:
            continue  # the web: left as it is
        target = posixpath.normpath(posixpath.join(base, parts.path)) \
            if parts.path else doc + ".html"
        if target == PDF_NAME:  # the intro's link to this PDF
            (link.find_parent("li") or link.find_parent("p")
             or link).decompose()
        elif target.endswith(".html") and target[:-5] in docs:
            link["href"] = "#" + anchor(target[:-5], parts.fragment)
        else:  # an image's own file, a source download: plain text here
            link.unwrap()
    for image in article.find_all("img", src=True):
        if not urlsplit(image["src"]).scheme:
            image["src"] = posixpath.normpath(
                posixpath.join(base, image["src"]))
    for toggle in article.select(".admonition.dropdown, .toggle"):
        toggle["class"] = [c for c in toggle["class"]
                           if c not in ("dropdown", "toggle")]
    for details in article.find_all("details"):
        details["open"] = ""
    return list(article.children)


def join_book(toc_file, html_dir=HTML):
    """The joined HTML and the bookmarks [(title, id, [(title, id)])]."""
    pages = toc_pages(toc_file)
    docs = {doc for doc, _ in pages}
    missing = [doc for doc in docs
               if not (html_dir / f"{doc}.html").exists()]
    if missing:
        sys.exit(f"book_pdf: not in {html_dir}: {missing}; run `make book`")
    # the root page is the shell: the theme's head (styles, MathJax) and body
    shell = BeautifulSoup((html_dir / f"{pages[0][0]}.html").read_text(
        encoding="utf-8"), "html.parser")
    style = shell.new_tag("style")
    style.string = PRINT_CSS
    shell.head.append(style)
    # its print header and its links to its own sections (hidden in print;
    # the theme's script looks their ids up, which are renamed here)
    for element in shell.select("#jb-print-docs-body"):
        element.decompose()
    for element in shell.select("#pst-page-toc-nav"):
        element.clear()
    article = shell.select_one("article.bd-article")
    article.clear()
    bookmarks, last_part = [], None
    for doc, part in pages:
        soup = BeautifulSoup((html_dir / f"{doc}.html").read_text(
            encoding="utf-8"), "html.parser")
        top = soup.select_one("article.bd-article section")
        chapter = (heading_text(top.find("h1")),
                   anchor(doc, target_heading(soup, top.find("h1"))), [])
        for heading in top.find_all("h2"):
            if heading.parent.name == "section" and heading.parent.get("id"):
                chapter[2].append((heading_text(heading), anchor(
                    doc, target_heading(soup, heading))))
        bookmarks.append(chapter)
        section = shell.new_tag("section", id=anchor(doc))
        section["class"] = "pdf-page"
        if part and part != last_part:
            label = shell.new_tag("p")
            label["class"] = "pdf-part"
            label.string = part
            section.append(label)
        last_part = part
        section.extend(rewrite_page(doc, soup, docs))
        article.append(section)
    return str(shell), bookmarks


def load_browser_driver():
    """The DevTools client of the browser test (one driver for both)."""
    sys.path.insert(0, str(ROOT / "tests" / "book"))
    try:
        return importlib.import_module("check_book_in_browser")
    except BaseException as skipped:  # it skips without chromium or a book
        if type(skipped).__name__ != "Skipped":
            raise
        sys.exit(f"book_pdf: {skipped}")


def print_pdf(joined_path, title):
    """Chromium's PDF of the joined page, once MathJax has typeset it."""
    driver = load_browser_driver()
    driver.PAGE_TIMEOUT = TIMEOUT
    browser = driver.DevTools()
    try:
        browser.socket.settimeout(TIMEOUT)
        found, errors = browser.visit(joined_path)  # awaits MathJax
        problems = {key: found[key] for key in
                    ("math_errors", "untypeset", "broken_images")
                    if found[key]}
        if problems:
            sys.exit(f"book_pdf: not printed, the joined book has {problems}")
        for error in errors:
            print(f"book_pdf: console error: {error}")
        page_height = (A4[1] - 2 * MARGIN - 0.15) * 96 / SCALE  # CSS px
        browser.call("Runtime.evaluate", session=True,
                     expression=KEEP_SHORT_BLOCKS % (page_height / 3))
        browser.call("Runtime.evaluate", session=True, awaitPromise=True,
                     expression="document.fonts.ready.then(() => true)")
        stream = browser.call(
            "Page.printToPDF", session=True, transferMode="ReturnAsStream",
            paperWidth=A4[0], paperHeight=A4[1], marginTop=MARGIN,
            marginBottom=MARGIN + 0.15, marginLeft=MARGIN,
            marginRight=MARGIN, scale=SCALE, printBackground=True,
            # untagged: the structure tree for screen readers would make the
            # file 12 MB instead of 4 (the HTML book is the accessible one)
            generateTaggedPDF=False,
            displayHeaderFooter=True, headerTemplate="<span></span>",
            footerTemplate=FOOTER.format(m=MARGIN, title=html.escape(title)))[
                "stream"]
        chunks = []
        while True:
            chunk = browser.call("IO.read", session=True, handle=stream,
                                 size=1 << 22)
            chunks.append(base64.b64decode(chunk["data"])
                          if chunk.get("base64Encoded")
                          else chunk["data"].encode("latin-1"))
            if chunk.get("eof"):
                break
        browser.call("IO.close", session=True, handle=stream)
        return b"".join(chunks), found["math"]
    finally:
        try:
            browser.close()
        except OSError:  # a helper of Chromium still wrote to its profile
            time.sleep(1)
            shutil.rmtree(browser.profile.name, ignore_errors=True)


def ideograph(code):
    """The UTF-16 hex of the ideograph for a radical's hex, else `code`."""
    char = chr(int(code, 16))
    if char in RADICALS:
        char = RADICALS[char]
    elif "\u2f00" <= char <= "\u2fdf":
        char = unicodedata.normalize("NFKC", char)
    return f"{ord(char):04X}" if len(char) == 1 and ord(char) <= 0xFFFF \
        else code


def unradical(cmap):
    """A ToUnicode CMap with radicals mapped to their ideographs."""
    def one(match):  # "<src> <dst>" of a bfchar block
        return match.group(1) + f"<{ideograph(match.group(2))}>"

    def chars(block):
        return re.sub(r"(<[0-9A-Fa-f]+>\s+)<([0-9A-Fa-f]{4})>", one,
                      block.group(0))

    def ranges(block):  # "<lo> <hi> <first dst>": spelled out if it moves
        def spread(match):
            low, high, first = (int(match.group(i), 16) for i in (1, 2, 3))
            codes = [f"{first + i:04X}" for i in range(high - low + 1)]
            fixed = [ideograph(code) for code in codes]
            if fixed == codes:
                return match.group(0)
            return (f"<{match.group(1)}> <{match.group(2)}> [" +
                    " ".join(f"<{code}>" for code in fixed) + "]")
        return re.sub(r"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>\s*"
                      r"<([0-9A-Fa-f]{4})>", spread, block.group(0))

    cmap = re.sub(r"beginbfchar.*?endbfchar", chars, cmap, flags=re.S)
    return re.sub(r"beginbfrange.*?endbfrange", ranges, cmap, flags=re.S)


def fonts(resources, seen):
    """Every font dictionary under a resource dictionary, once."""
    resources = resources.get_object() if resources else {}
    for font in resources.get("/Font", {}).values():
        if font.idnum not in seen:
            seen.add(font.idnum)
            yield font.get_object()
            yield from fonts(font.get_object().get("/Resources"), seen)
    for xobject in resources.get("/XObject", {}).values():
        if xobject.idnum not in seen:
            seen.add(xobject.idnum)
            yield from fonts(xobject.get_object().get("/Resources"), seen)


def fix_chinese_text(writer):
    """Map the radicals of every font's ToUnicode CMap to ideographs;
    returns how many CMaps changed."""
    seen, changed = set(), 0
    for page in writer.pages:
        for font in fonts(page.get("/Resources"), seen):
            if "/ToUnicode" not in font:
                continue
            stream = font["/ToUnicode"].get_object()
            cmap = stream.get_data().decode("latin-1")
            fixed = unradical(cmap)
            if fixed != cmap:
                stream.set_data(fixed.encode("latin-1"))
                changed += 1
    return changed


def add_bookmarks(raw, bookmarks, out, title, author):
    """Write `raw` to `out` with one bookmark per chapter and section, each
    at its heading; links Chromium left to files of this machine dropped."""
    # Skia's trailer counts fewer objects than it writes; pypdf says so once
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    reader = PdfReader(io.BytesIO(raw))
    writer = PdfWriter(clone_from=reader)
    destinations = reader.named_destinations
    unplaced = []

    def place(name, parent=None, text=None):
        dest = destinations.get("/" + name) or destinations.get(name)
        if dest is None:
            unplaced.append(text)
            return None
        page = reader.get_destination_page_number(dest)
        fit = Fit.xyz(left=dest.left, top=dest.top) \
            if dest.get("/Type") == "/XYZ" else Fit.fit()
        return writer.add_outline_item(title=text, page_number=page,
                                       parent=parent, fit=fit)

    for chapter, name, sections in bookmarks:
        item = place(name, text=chapter)
        for section, section_name in sections:
            place(section_name, parent=item, text=section)
    if unplaced:
        sys.exit(f"book_pdf: no destination for {unplaced}")
    fix_chinese_text(writer)
    dropped = 0
    for page in writer.pages:
        annotations = page.get("/Annots")
        if annotations is None:
            continue
        kept = [a for a in annotations.get_object()
                if not str(a.get_object().get("/A", {}).get("/URI", ""))
                .startswith("file:")]
        dropped += len(annotations.get_object()) - len(kept)
        annotations.get_object()[:] = kept
    writer.add_metadata({"/Title": title, "/Author": author,
                         "/Producer": "normbook tools/book_pdf.py, pypdf"})
    writer.page_mode = "/UseOutlines"
    partial = out.with_suffix(".pdf.partial")
    with partial.open("wb") as handle:
        writer.write(handle)
    partial.replace(out)
    return len(writer.pages), dropped


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep-html", action="store_true",
                        help=f"keep the joined page, {JOINED}, to look at")
    parser.add_argument("--toc", default=ROOT / "_toc.yml",
                        help="the order of the pages (default: _toc.yml)")
    parser.add_argument("--html", type=Path, default=HTML,
                        help="the built book (default: _build/html)")
    args = parser.parse_args()
    config = yaml.safe_load((ROOT / "_config.yml").read_text("utf-8"))
    start = time.monotonic()
    joined, bookmarks = join_book(args.toc, args.html)
    joined_path = args.html / JOINED
    joined_path.write_text(joined, encoding="utf-8")
    try:
        raw, math = print_pdf(joined_path, config["title"])
    finally:
        if not args.keep_html:
            joined_path.unlink()
    out = args.html / PDF_NAME
    pages, dropped = add_bookmarks(raw, bookmarks, out, config["title"],
                                   config["author"])
    sections = sum(len(s) for _, _, s in bookmarks)
    print(f"book_pdf: {out}: {pages} pages, "
          f"{len(bookmarks)} chapters and {sections} sections bookmarked, "
          f"{math} formulas typeset, {dropped} links to local files dropped, "
          f"{out.stat().st_size / 1e6:.1f} MB in "
          f"{time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
