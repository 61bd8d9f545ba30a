"""The long-running commands' log lines carry UTC times, whatever the host's zone."""

import logging
import os
import time

import pytest

from swiperec.cli.common import utc_log_formatter


@pytest.fixture
def host_in_tokyo():
    """The process's local zone set to UTC+9 (the log module reads it through time.localtime)."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Tokyo"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def test_a_log_line_shows_the_utc_time_not_the_hosts(host_in_tokyo):
    assert time.localtime(0).tm_hour == 9  # the zone as this test knows it
    record = logging.LogRecord("swiperec.realtime", logging.INFO, __file__, 1, "batch", None, None)
    record.created, record.msecs = 1_796_601_600.25, 250.0  # 2026-12-07 00:00:00.250 UTC
    line = utc_log_formatter("%(asctime)s %(name)s %(levelname)s %(message)s").format(record)
    assert line == "2026-12-07T00:00:00.250Z swiperec.realtime INFO batch"
