"""Nagios exit codes, the language ops tools already speak: 0 ok, 1 warning, 2 critical, 3 unknown."""

from __future__ import annotations

import enum


class Status(enum.IntEnum):
    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @staticmethod
    def worst(statuses) -> Status:
        """CRITICAL beats UNKNOWN beats WARNING beats OK (an unknown is not a pass)."""
        order = [Status.OK, Status.WARNING, Status.UNKNOWN, Status.CRITICAL]
        return max(statuses, key=order.index, default=Status.OK)
