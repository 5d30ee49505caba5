"""The joined book printed to PDF by headless Chromium, over the DevTools
protocol (tools/devtools.py), once the book's MathJax has typeset it."""
import base64
import html
import shutil
import sys
import time

from devtools import BROWSER, DevTools

A4 = (8.27, 11.69)            # inches
MARGIN = 0.55                 # inches
SCALE = 0.9                   # text at 10.8 pt; 79 characters of code fit
TIMEOUT = 600                 # seconds for the joined book to load and print

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


def print_pdf(joined_path, title):
    """Chromium's PDF of the joined page, once MathJax has typeset it."""
    if not BROWSER:
        sys.exit("book_pdf: no chromium on PATH: install Debian's `chromium` "
                 "(.ci/run does)")
    browser = DevTools(timeout=TIMEOUT)
    try:
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
