"""Reading a report page back, for the tests: its machine-readable numbers and its resources.

edgeq.host.report writes every number of a table cell with `data-metric`, `data-model` and
`data-value`; these helpers collect them (and every src/href/... of the page) with the standard
library's HTMLParser. Imports: standard library only.
"""
from __future__ import annotations

from html.parser import HTMLParser
from typing import Optional


class _MetricParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.metrics: dict[tuple[str, str], float] = {}
        self.img_srcs: list[str] = []
        self.resource_urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        a = dict(attrs)
        if a.get("data-metric") and a.get("data-value"):
            self.metrics[(a["data-metric"] or "", a.get("data-model") or "")] = float(
                a["data-value"] or "nan")
        if tag == "img":
            self.img_srcs.append(a.get("src") or "")
        for name in ("src", "href", "data", "poster", "action"):
            if a.get(name):
                self.resource_urls.append(a[name] or "")


def parse_html_metrics(text: str) -> dict[tuple[str, str], float]:
    """{(metric, model): value} of every machine-readable number of a report page."""
    p = _MetricParser()
    p.feed(text)
    return p.metrics


def html_resources(text: str) -> tuple[list[str], list[str]]:
    """(img src values, every src/href/data/... attribute value) of a report page."""
    p = _MetricParser()
    p.feed(text)
    return p.img_srcs, p.resource_urls
