"""The federated loop: fedsim's ServerApp and ClientApp, the engines that run them (Flower's Ray
simulation, the in-process engine) and the fault plan. It records through `fedsim.recording` and
aggregates through `strategies`; it never imports an attack.
"""
