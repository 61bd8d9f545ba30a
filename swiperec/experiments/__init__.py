"""Experiments between model versions: A/B tests and staged rollouts, their assignment of users
to arms, and the statistics that decide them (sample ratio checks, delta-method and CUPED effects,
always-valid sequential tests, guardrails).
"""
