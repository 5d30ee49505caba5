"""The pages of the built book joined into one HTML document for
tools/book_pdf.py to print, in the order of _toc.yml, each page's ids
prefixed with its name and its links turned into links within the document."""
import posixpath
import re
import sys
import unicodedata
from pathlib import Path
from urllib.parse import unquote, urlsplit

import yaml
from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
PDF_NAME = "normbook.pdf"     # intro.md links to it by this name

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
     (pdf-keep, set by book_pdf_print.KEEP_SHORT_BLOCKS); a longer one may
     split, rather than leave a gap or an empty code box at the foot of a
     page */
  #main-content div.highlight, #main-content div[class*=highlight-],
  #main-content .admonition, #main-content table { break-inside: auto; }
  #main-content .pdf-keep { break-inside: avoid; }
  /* a heading never splits over two pages, nor ends one */
  #main-content h1, #main-content h2, #main-content h3, #main-content h4 {
    break-inside: avoid; break-after: avoid;
  }
  /* a line wider than the column wraps instead of being cut off */
  pre { white-space: pre-wrap !important; overflow: visible !important; }
  .sd-summary-state-marker, button.toggle-button { display: none !important; }
  /* a shadow prints as a 300 dpi image: 200 of them tripled the file */
  #main-content *, #main-content *::before, #main-content *::after {
    box-shadow: none !important;
  }
}
"""


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

