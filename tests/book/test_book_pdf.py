"""tools/book_pdf.py's parts that need no browser: joining a page into the
one document and plain-text bookmark titles (book_pdf_join.py), and the CMap
repair that makes Chinese text extract as ideographs (book_pdf_outline.py)."""
import sys
from pathlib import Path

from bs4 import BeautifulSoup

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import book_pdf_join  # noqa: E402  (a script's module, not a package)
import book_pdf_outline  # noqa: E402

PAGE = """<html><body><article class="bd-article">
<section id="top"><h1><span class="section-number">2. </span>Batch
Norm<a class="headerlink" href="#top">#</a></h1>
<p>See <a href="#top">above</a>, <a href="../part2/04_x.html#s">chapter 4</a>,
<a href="../../bibliography.html#id2">2015</a>, <a href="https://x.org">web</a>
and <a href="../../_images/f.png"><img src="../../_images/f.png"></a>.</p>
<ul><li><a href="../../normbook.pdf">this PDF</a></li></ul>
<div class="solution dropdown admonition" id="sol"><p>s</p></div>
<details><summary>Answer</summary><p>a</p></details>
<script>var duplicate = 1;</script>
<section id="sec"><h2>Where <span class="math">\\(\\epsilon\\)</span>
takes over<a class="headerlink" href="#sec">#</a></h2></section>
</section></article></body></html>"""
DOCS = {"chapters/part1/02_b", "chapters/part2/04_x", "bibliography"}


def joined():
    soup = BeautifulSoup(PAGE, "html.parser")
    heading = book_pdf_join.target_heading(soup, soup.find("h2"))
    article = BeautifulSoup("", "html.parser")
    article.extend(book_pdf_join.rewrite_page("chapters/part1/02_b", soup,
                                              DOCS))
    return soup, heading, article


def test_a_page_joins_with_its_ids_and_links_inside_the_document():
    soup, heading, article = joined()
    prefix = "chapters.part1.02_b--"
    assert article.find("section")["id"] == prefix + "top"
    assert heading == "sec.heading"
    assert article.find("h2")["id"] == prefix + "sec.heading"
    assert article.find("h2").find("a")["href"] == "#" + prefix + "sec.heading"
    hrefs = [a["href"] for a in article.find_all("a", href=True)]
    assert "#" + prefix + "top" in hrefs
    assert "#chapters.part2.04_x--s" in hrefs
    assert "#bibliography--id2" in hrefs
    assert "https://x.org" in hrefs
    assert not any("png" in href or "pdf" in href for href in hrefs)
    assert article.find("img")["src"] == "_images/f.png"
    assert "this PDF" not in article.get_text()


def test_folded_content_is_printed_open_and_scripts_are_dropped():
    _, _, article = joined()
    assert "dropdown" not in article.find(id=True, class_="solution")["class"]
    assert article.find("details").has_attr("open")
    assert article.find("script") is None


def test_bookmark_titles_are_plain_text():
    soup = BeautifulSoup(PAGE, "html.parser")
    assert book_pdf_join.heading_text(soup.find("h1")) == "2. Batch Norm"
    assert book_pdf_join.heading_text(soup.find("h2")) == "Where ε takes over"
    assert book_pdf_join.plain_tex(r"\(\mathrm{d}\Gamma_i\)") == "dΓ_i"


def test_radicals_in_a_cmap_become_ideographs():
    # 面 U+9762 drawn with the glyph Chromium maps to U+2FAF; 页 U+9875
    # with U+2EDA's; a range that runs over ⼀ U+2F00 and ⼁ U+2F01
    cmap = ("2 beginbfchar\n<4C> <2FAF>\n<4D> <2EDA>\nendbfchar\n"
            "2 beginbfrange\n<10> <11> <2F00>\n<20> <21> <0041>\n"
            "endbfrange\n")
    fixed = book_pdf_outline.unradical(cmap)
    assert "<4C> <9762>" in fixed and "<4D> <9875>" in fixed
    assert "<10> <11> [<4E00> <4E28>]" in fixed
    assert "<20> <21> <0041>" in fixed
    assert book_pdf_outline.unradical(fixed) == fixed
