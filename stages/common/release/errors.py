"""The service's refusals."""

from __future__ import annotations

from starlette.exceptions import HTTPException


class Refused(HTTPException):
    """A request this service does not take: an HTTP status and one line saying why."""
