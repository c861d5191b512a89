"""What is learned and from what: data sets and their partitions, the models, the membership
ledger (which record each client trains on), local training and DP-SGD. The engine and the
attackers both build on these; they know nothing of Flower's messages.
"""
