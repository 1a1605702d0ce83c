"""Fixtures of the train tests."""

import pytest
from train_models import classification_data


@pytest.fixture(scope="module")
def data():
    return classification_data()
