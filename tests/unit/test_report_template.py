"""The report's HTML comes from a jinja2 template with autoescape: values and captions are text, never markup."""

import pandas as pd

from fedsim.report.writer import Plot, _figure_html, _page, _table_html


def test_table_values_and_headers_are_escaped_and_missing_values_blank():
    html = _table_html(pd.DataFrame({"<col>": ["<script>alert(1)</script>", None], "x": [0.25, 3]}))
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<th>&lt;col&gt;</th>" in html
    assert "<td></td>" in html and "<td>0.25</td>" in html


def test_captions_are_escaped_but_the_page_keeps_its_sections_and_style():
    section = _figure_html(Plot("p", "A & B", 'say "<b>hi</b>"', None))
    assert "<b>" not in section and "A &amp; B" in section
    page = _page("t <1>", "meta", [section])
    assert page.startswith("<!DOCTYPE html>") and page.endswith("</body></html>\n")
    assert section in page and ".side-by-side > div" in page and "<title>t &lt;1&gt;</title>" in page
