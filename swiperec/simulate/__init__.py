"""Simulated app traffic against the real serving path (`swiperec simulate`).

traffic.py   simulate(database_url, truth, options) -> Report: sessions of requests to the
             Edge Function over HTTP and swipes written as the app writes them, new videos
             and new users arriving during the run
users.py     the simulated users (truth users and sign-ups) and their access tokens
edge.py      the Edge Function run under Deno for the simulator
report.py    the Report, and the Tally that counts while the run goes on
"""

from swiperec.simulate.report import Report
from swiperec.simulate.traffic import SimulationError, SimulationOptions, simulate

__all__ = ["Report", "SimulationError", "SimulationOptions", "simulate"]
