"""What a person reads: the run summary, the plots, and report.html (a run's and a sweep's),
rendered from the run folder's tables.
"""
