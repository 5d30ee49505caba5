"""Fixtures that several tests of normbook.common share."""
import pytest

from normbook.common.data import digits


@pytest.fixture(scope="module")
def digit_data():
    """The digits with the book's fixed split, loaded once per module."""
    return digits()
