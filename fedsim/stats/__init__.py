"""Statistics of leakage: ROC metrics (AUC, TPR at FPR) with their intervals, and paired
differences over seeds. Pure numpy/scipy/scikit-learn; nothing here knows about a run folder.
"""
