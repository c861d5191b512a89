"""Analysis scripts behind the measured tables of the README (not API; see research/README.md).

A package only so that tests can import a script as `research.<name>`; each runs as
`python research/<name>.py`.
"""
