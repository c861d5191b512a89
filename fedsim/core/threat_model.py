"""The configured threat model (docs/design.md, section 2), decided once from the config.

Whether the adversary sees individual client updates decides which attacks can run (those that
read the other clients' models), what a recorded run offers it (`attackers.inference.threat_models`)
and what the console and the report say; every one of those asks this object, so the answer and
its refusal message are written once. It reads only the config, so every layer can import it.
Threat models after Nasr, Shokri and Houmansadr (IEEE S&P 2019, section III).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fedsim.core.config import AdversaryConfig, Config

Observes = Literal["client updates", "aggregates", "global models", "nothing"]

FIX = "use adversary.role: server without defense.secure_aggregation"


@dataclass(frozen=True)
class ThreatModel:
    """Who attacks, what it observes of the run and whose membership it attacks.

    Attributes
    ----------
    adversary : AdversaryConfig
        The config's `adversary` section.
    secure_aggregation : bool
        `defense.secure_aggregation`: the server sees only the aggregate of each round.
    """

    adversary: AdversaryConfig
    secure_aggregation: bool

    @classmethod
    def of(cls, config: Config) -> ThreatModel:
        """The threat model a config sets up.

        Parameters
        ----------
        config : Config
            A run's config.

        Returns
        -------
        ThreatModel
            Its adversary and whether secure aggregation hides the individual updates.
        """
        return cls(config.adversary, config.defense.secure_aggregation)

    @property
    def sees_individual_updates(self) -> bool:
        """Whether the adversary holds each client's update: a curious server without secure aggregation."""
        return self.adversary.role == "server" and not self.secure_aggregation

    @property
    def observes(self) -> Observes:
        """What the adversary reads of a run: the clients' returned models (a server that sees
        individual updates), the aggregates (a server under secure aggregation), the global models
        it was sent (a participant), or nothing (no adversary).
        """
        if self.adversary.role == "none":
            return "nothing"
        if self.adversary.role == "participant":
            return "global models"
        return "client updates" if self.sees_individual_updates else "aggregates"

    @property
    def target(self) -> str | None:
        """Whose membership is attacked, as leakage.csv's `target` column names it: "client-XXX"
        (the victim's updates), "global" (the aggregates), "others" (the other clients' members,
        for a participant); None without an adversary.
        """
        return {"client updates": f"client-{self.adversary.victim:03d}", "aggregates": "global", "global models": "others",
                "nothing": None}[self.observes]

    @staticmethod
    def refusal(needs: str) -> str:
        """The one-line refusal of something that needs individual updates.

        Parameters
        ----------
        needs : str
            What needs them, e.g. "attacks: lira calibrates against the other clients' models".

        Returns
        -------
        str
            `needs`, why only one threat model offers it, and how to set that up.
        """
        return f"{needs}, which only a curious server that sees individual updates holds; {FIX}"

    def describe(self) -> str:
        """The threat model in words, for the console and the report.

        Returns
        -------
        str
            One sentence.
        """
        adversary = self.adversary
        if adversary.role == "none":
            return "no adversary: honest run, no leakage measured"
        if adversary.role == "participant":
            action = "adds gradient ascent on the targets to its uploads" if adversary.mode == "gradient-ascent" else "trains honestly"
            return f"curious participant (client {adversary.victim}) observes the global models and {action}; targets: the other clients' members"
        if self.sees_individual_updates:
            seen = f"observes client {adversary.victim}'s local models"
        else:
            seen = "sees only the aggregate (secure aggregation), so it attacks the global models"
        ascent = f"sends {'every client' if adversary.sent_to == 'all' else 'it'} a gradient-ascent step"
        actions = [a for a, on in (("isolates the victim", adversary.isolate), (ascent, adversary.mode == "gradient-ascent"),
                                   ("sends it a crafted model (one first-layer neuron per target)", adversary.mode == "crafted-model")) if on]
        return f"curious server {seen}" + (f"; it {' and '.join(actions)}" if actions else "; passive")
