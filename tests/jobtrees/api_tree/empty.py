"""A branch with neither leaves nor branches."""
from __future__ import annotations

from . import ApiRoot


class Empty(ApiRoot):
    NAME = "Empty"
    DESCRIPTION = "A branch without leaves"
    BRANCH_NAME = "empty"
