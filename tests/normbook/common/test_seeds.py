"""normbook.common.seeds: one base in NORMBOOK_SEED moves every seed."""
import pytest

from normbook.common.seeds import STRIDE, book_seed, book_seeds, seed_base


def test_base_zero_is_the_book_draw(monkeypatch):
    monkeypatch.delenv("NORMBOOK_SEED", raising=False)
    assert seed_base() == 0
    assert book_seed(7) == 7 and book_seeds(3) == (0, 1, 2)


def test_another_base_moves_every_seed_to_its_own_range(monkeypatch):
    monkeypatch.setenv("NORMBOOK_SEED", "3")
    assert book_seeds(2, start=5) == (3 * STRIDE + 5, 3 * STRIDE + 6)
    monkeypatch.setenv("NORMBOOK_SEED", "4")
    assert min(book_seeds(3)) == 4 * STRIDE > 3 * STRIDE + STRIDE - 1


@pytest.mark.parametrize("raw", ["one", "1.5", "-2"])
def test_a_bad_base_is_refused_with_its_name(monkeypatch, raw):
    monkeypatch.setenv("NORMBOOK_SEED", raw)
    message = "NORMBOOK_SEED must be a non-negative integer"
    with pytest.raises(ValueError, match=message):
        seed_base()


def test_an_offset_outside_the_stride_is_refused():
    with pytest.raises(ValueError, match="offset"):
        book_seed(STRIDE)
