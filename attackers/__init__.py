"""Adversaries: threat models, manipulations of the FL loop and membership inference attacks."""
