"""Reconstruction attacks: rebuilding a client's records from what the adversary recorded.

`base` is the interface, `inverting_gradients` the optimisation-based attack, `imprint` the exact
read of a crafted model's traps, `quality` the scoring against the true records, `measure` the
loop over a recorded run's observed rounds.
"""
