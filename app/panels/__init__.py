"""Render helpers of one page each (`from panels.serve import ...`): the self-contained parts a
page would otherwise carry inline, such as the Serve page's load-test dashboard. Parts that
several pages share live in components.py; the pages themselves stay in views/."""
