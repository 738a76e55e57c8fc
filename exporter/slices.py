"""Parse: the user's own slices of the numbers, ``app`` and ``line``, as bounded label values.

A call center asks "which queue" and "which of our numbers". Both answers come from
the user's config, never from the provider's free text: ``app`` is a query parameter
of the callback URL, kept only if it is in the allow-list (``other`` otherwise, empty
when absent); ``line`` is the name the config gives one of the user's own numbers (the
called number of an inbound call, the calling one of an outbound call; ``other`` for
any other number, empty when there is none). So the series stay bounded by the config,
and no phone number ever becomes a label value.

With nothing configured there are no such labels at all, and every series is what it
was before.
"""

from __future__ import annotations

from collections.abc import Mapping

from .config import LabelsConfig

OTHER = "other"


class Slices:
    """The configured slice labels: their names, and the values of one callback."""

    def __init__(self, config: LabelsConfig) -> None:
        self.parameter = config.app.query_parameter
        self._apps = frozenset(config.app.values)
        self._lines = dict(config.lines)
        names: list[str] = []
        if self.parameter is not None:
            names.append("app")
        if self._lines:
            names.append("line")
        self.names: tuple[str, ...] = tuple(names)

    def __bool__(self) -> bool:
        return bool(self.names)

    def app(self, query: Mapping[str, str]) -> str:
        """``app`` of a callback from its URL's query string."""
        if self.parameter is None:
            return ""
        value = query.get(self.parameter, "")
        if not value:
            return ""
        return value if value in self._apps else OTHER

    def line(self, direction: str, to: str | None, from_: str | None) -> str:
        """``line``: the user's own number of the call or message, by its name."""
        number = to if direction == "inbound" else from_
        if not number:
            return ""
        return self._lines.get(number.strip(), OTHER)

    def values(self, app: str, direction: str, to: str | None,
               from_: str | None) -> tuple[str, ...]:
        """The slice label values, in the order of ``names``."""
        values: list[str] = []
        if self.parameter is not None:
            values.append(app)
        if self._lines:
            values.append(self.line(direction, to, from_))
        return tuple(values)
