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

The parts: book_pdf_join.py joins the pages, book_pdf_print.py prints them
(tools/devtools.py drives Chromium), book_pdf_outline.py adds the bookmarks
and repairs the Chinese text.
"""
import argparse
import time
from pathlib import Path

import yaml
from book_pdf_join import HTML, PDF_NAME, ROOT, join_book
from book_pdf_outline import add_bookmarks
from book_pdf_print import print_pdf

JOINED = "_book_pdf.html"     # "_": the browser test leaves it alone


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
