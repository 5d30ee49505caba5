"""The printed PDF finished with pypdf: a bookmark at every chapter's and
section's heading, Chinese text that copies as ideographs, not radicals, and
no links to files of the machine that printed it."""
import io
import logging
import re
import sys
import unicodedata

from pypdf import PdfReader, PdfWriter
from pypdf.generic import Fit

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

