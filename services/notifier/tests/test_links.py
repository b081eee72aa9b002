"""ADWATCH_GRAFANA_URL as a link template: `make run` points each alert at its chart in the local report."""

from __future__ import annotations

import pytest

from adwatch_notifier.formatting import alert_link, console_box, email_text, pagerduty_event, slack_message

from .conftest import make_alert

TEMPLATE = "file:///tmp/run/report.html#{alert_id}"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        pytest.param("https://grafana/d/adwatch", "https://grafana/d/adwatch", id="plain-url-unchanged"),
        pytest.param(TEMPLATE, "file:///tmp/run/report.html#{id}", id="alert-anchor"),
        pytest.param("https://g/d?var-fp={fingerprint}", "https://g/d?var-fp={fp}", id="fingerprint"),
        pytest.param("", "", id="none"),
    ],
)
def test_the_link_template_is_filled_per_alert(template: str, expected: str) -> None:
    alert = make_alert()
    assert alert_link(template, alert) == expected.format(id=alert.alert_id, fp=alert.fingerprint)


def test_every_channel_links_to_the_alerts_own_anchor() -> None:
    alert = make_alert()
    link = f"file:///tmp/run/report.html#{alert.alert_id}"
    assert f"chart {link}" in console_box(alert, TEMPLATE)
    assert link in str(slack_message(alert, TEMPLATE))
    assert link in email_text(alert, TEMPLATE)
    assert pagerduty_event(alert, "key", TEMPLATE)["links"][0]["href"] == link
    assert "chart" not in console_box(alert)
