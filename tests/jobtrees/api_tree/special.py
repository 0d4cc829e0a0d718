"""Leaves whose behaviour the tests look at: failures, requeues, app context."""
from __future__ import annotations

from typing import Any

from flask import current_app

from flask_spacewalk import NO_RESULT

from . import ApiRoot


class Special(ApiRoot):
    NAME = "Special"
    DESCRIPTION = "Jobs that misbehave or look around"
    BRANCH_NAME = "special"


class Boom(Special):
    NAME = "Boom"
    DESCRIPTION = "Raises inside run()"
    LEAF_NAME = "boom"

    def run(self) -> Any:
        super().run()
        raise RuntimeError("kaboom from inside the job")


class Again(Special):
    NAME = "Again"
    DESCRIPTION = "Answers NO_RESULT for ever"
    LEAF_NAME = "again"

    def run(self) -> Any:
        super().run()
        return NO_RESULT, 0


class Context(Special):
    NAME = "Context"
    DESCRIPTION = "Records the current app's name and MARK setting"
    LEAF_NAME = "context"

    def run(self) -> Any:
        super().run()
        self.update_attrs(
            seen={"app": current_app.name, "mark": current_app.config.get("MARK")}
        )
        return 200

    def get_data(self) -> Any:
        return {"app": current_app.name, "seen": self.seen}


class BadData(Special):
    NAME = "Bad data"
    DESCRIPTION = "get_data() raises"
    LEAF_NAME = "bad_data"

    def get_data(self) -> Any:
        raise ValueError("secret detail of a failing get_data")


class Staged(Special):
    NAME = "Staged"
    DESCRIPTION = "Adds its stage to progress()"
    LEAF_NAME = "staged"

    def progress(self) -> dict[str, Any]:
        answer = super().progress()
        answer["stage"] = "done" if self.resultCode == 200 else "waiting"
        return answer
