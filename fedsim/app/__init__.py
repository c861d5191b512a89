"""The application on top: the experiment (config to run folder), sweeps and the reproduction
preset, the Python API, the `fedsim` CLI, fedsim as a Flower app, and the console that shows a run.
"""
