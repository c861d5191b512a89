"""The run folder as a store: the recorder that writes every round's models, and `Run`, which
reads them back. Strategies, the engine and the attackers meet here, never in each other.
"""
