"""The run configuration: YAML in, validated pydantic models out (docs/design.md, section 3.1).

Every key is public interface. Unknown keys are rejected, so a typo never silently falls back
to a default. Names that a registry owns (dataset, model, strategy, attacks) are checked by
that registry's layer (`fedsim.app.experiment.check_config`), not here, so this module imports
nothing above the core. `--set a.b=value` overrides are parsed as YAML scalars and applied before
validation, so they are checked exactly like the file.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from fedsim.core.errors import FedsimError

FLOAT32_MAX = 3.4028234663852886e38  # the largest float32: parameters and steps are float32
QUICKSTART = "quickstart.yaml"  # shipped inside the package; configs/quickstart.yaml in the checkout links to it


def quickstart_path() -> Path:
    """The quickstart config shipped with the installed package (the one default of `fedsim run`)."""
    return Path(str(resources.files("fedsim").joinpath(QUICKSTART)))


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are re-validated on set."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    dataset: str = Field("digits", description="data set registry name: digits, mnist, cifar10, cifar100, imagefolder, location, purchase100, "
                         "texas100, adult, huggingface; or \"package.module:name\", a loader called with no arguments (root=data.root "
                         "if it declares root) that returns (features, labels) arrays, a datasets.Dataset or a torch Dataset of (x, y) pairs")
    root: str | None = Field(None, description="folder of the data set's files (torchvision's root; class folders or a .tar for imagefolder); "
                             "huggingface: a save_to_disk folder, a .parquet or .csv file, an image folder, or a Hub name; null: built in")
    download: bool = Field(False, description="let torchvision download mnist/cifar into root; huggingface: let a Hub name be loaded from the Hub")
    features: str | None = Field(None, description="huggingface (or a loader's datasets.Dataset): the input column; null: image, img or x, "
                                 "else every column but label and partition_by (tabular rows)")
    label: str = Field("label", description="huggingface (or a loader's datasets.Dataset): the label column")
    num_clients: int = Field(4, ge=1, description="clients in the federation")
    partition: Literal["iid", "dirichlet", "shard", "natural"] = Field(
        "iid", description="members over clients (flwr-datasets' partitioners): iid, dirichlet by label (DirichletPartitioner), shard "
        "(classes_per_client classes each, PathologicalPartitioner) or natural (one client per partition_by value, NaturalIdPartitioner)")
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration (smaller: more skewed label mixes)")
    classes_per_client: int = Field(2, ge=1, description="shard: the classes each client's members come from")
    partition_by: str | None = Field(None, description="natural: the column of each record's writer/user id (huggingface or a loader's "
                                     "datasets.Dataset); client c holds the c-th smallest id; never a feature")
    records_per_client: int | None = Field(200, ge=1, description="member records per client; null: split all member records")
    nonmembers: int = Field(400, ge=0, description="records no client trains on: half for the attacker's training, half for evaluation")
    test_records: int = Field(500, ge=1, description="utility test split (accuracy of the global model)")

    @model_validator(mode="after")
    def _natural_needs_ids(self) -> DataConfig:
        if self.partition == "natural" and not self.partition_by:
            raise ValueError("partition natural gives one client per writer/user id; set data.partition_by to the column holding it")
        return self


def _float32_step(value: float) -> float:
    """A step size the float32 parameters can take: a larger one overflows to inf in the first update."""
    if value > FLOAT32_MAX:
        raise ValueError(f"{value:g} is beyond float32's largest number ({FLOAT32_MAX:.4g}), the precision the model trains in; "
                         "give a finite step such as 0.05")
    return value


class ModelConfig(Section):
    name: str = Field("fcn", description="model registry name: fcn, mnist_cnn, alexnet_cifar, resnet18, resnet34, densenet121; or "
                      "\"package.module:name\", an nn.Module subclass or factory called with args as keywords, plus input_shape (tuple, "
                      "no batch) and num_classes where its signature names them, returning a torch.nn.Module")
    args: dict[str, Any] = Field(default_factory=dict, description="arguments of the model's constructor (e.g. fcn: hidden, activation)")


class TrainConfig(Section):
    rounds: int = Field(20, ge=1, description="federated rounds")
    local_epochs: int = Field(1, ge=1, description="epochs of local training per round")
    batch_size: int = Field(32, ge=1, description="records per local optimiser step")
    lr: float = Field(0.05, gt=0, allow_inf_nan=False, description="clients' learning rate")
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="clients' optimiser: sgd or adam")
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum (sgd only)")
    weight_decay: float = Field(0.0, ge=0, description="L2 weight decay of the clients' optimiser")

    _lr_in_float32 = field_validator("lr")(_float32_step)


class StrategyConfig(Section):
    name: str = Field("fedavg", description="strategy registry name (README: Strategies and defences) or \"package.module:Class\"")
    args: dict[str, Any] = Field(default_factory=dict, description="arguments of the strategy's constructor")
    base: StrategyConfig | None = Field(None, description="dp-* wrappers only: the strategy they wrap, {name, args, base}; null: fedavg")


ROLES = ("server", "participant", "none")


RULE = "config_rule"


def _rule(message: str) -> PydanticCustomError:
    """A rule between config keys: its message names the keys, so it is shown like Config's own rules."""
    return PydanticCustomError(RULE, message)


class _Adversary(Section):
    """The keys of `adversary`, in config.yaml's order, and what every role shares.

    Each role narrows the keys it cannot use (`ServerAdversary`, `ParticipantAdversary`,
    `NoAdversary`): a combination no role allows is refused where it is written, in one line.
    """

    role: Literal["server", "participant", "none"] = Field("server", description="who attacks: server (curious server), participant (curious client) or none")
    mode: Literal["passive", "gradient-ascent", "crafted-model"] = Field(
        "passive", description="passive (observes only), gradient-ascent on the target records (active), or crafted-model "
        "(server only: the victim is sent a model whose first-layer neurons each fire on one target; Pichler et al. 2022)")
    isolate: bool = Field(False, description="server only: the victim gets a model of its own, never averaged with the others")
    victim: int = Field(0, ge=0, description="the client the server targets; the participant's own client id")
    target_records: int = Field(200, ge=0, description="evaluation targets: half members (victim's, or other clients' for a participant), half non-members")
    gamma: float = Field(1.0, gt=0, allow_inf_nan=False,
                         description="gradient-ascent step size: step = gamma * gradient of the ascended records' mean loss")
    step_norm: float | None = Field(None, gt=0, description="scale-free step: its L2 norm = step_norm * the parameters' L2 norm (overrides gamma)")
    active_rounds: list[int] | None = Field(None, description="rounds in which the adversary acts; null: all")
    sent_to: Literal["victim", "all"] = Field(
        "victim", description="server gradient ascent: who is sent the ascended model: the victim only, or every client (Nasr et al.'s "
        "active global attacker ascends the global model; the honest clients' replies then show how training undoes the step on "
        "records they never held); ignored unless mode: gradient-ascent")

    _gamma_in_float32 = field_validator("gamma")(_float32_step)

    def acts_in(self, server_round: int) -> bool:
        """Whether the adversary manipulates a round.

        Parameters
        ----------
        server_round : int
            The round (1-based).

        Returns
        -------
        bool
            True when its mode is active (gradient-ascent, crafted-model) and the round is among
            `active_rounds` (every round when null); never without an adversary.
        """
        return self.role != "none" and self.mode != "passive" and (self.active_rounds is None or server_round in self.active_rounds)


class ServerAdversary(_Adversary):
    """A curious server (docs/design.md, section 2.1): every mode, isolation, and whom the ascended model is sent."""

    role: Literal["server"] = Field("server", description="who attacks: server (curious server), participant (curious client) or none")
    victim: int = Field(0, ge=0, description="the client the server targets (its partition id)")

    @field_validator("role", mode="before")
    @classmethod
    def _a_role(cls, value: Any) -> Any:
        if value not in ROLES:  # the discriminator sends an unknown role here: name every choice
            raise PydanticCustomError("literal_error", "Input should be 'server', 'participant' or 'none'")
        return value

    @model_validator(mode="after")
    def _one_manipulation(self) -> ServerAdversary:
        if self.sent_to == "all" and self.mode == "crafted-model":
            raise _rule("adversary.sent_to: all sends every client the gradient-ascent step; a crafted model traps the victim only: "
                        "set sent_to: victim")
        if self.mode == "crafted-model" and self.isolate:
            raise _rule("adversary.mode crafted-model already keeps the victim's crafted replies out of the aggregate; set adversary.isolate: false")
        return self


class _NotServer(_Adversary):
    """A role other than the server's: no crafted model, no isolation, nothing sent to anyone."""

    mode: Literal["passive", "gradient-ascent"] = Field("passive", description="passive (observes only) or gradient-ascent on the target records (active)")
    isolate: Literal[False] = Field(False, description="server only; false for this role")
    sent_to: Literal["victim"] = Field("victim", description="server only; victim for this role")

    @field_validator("mode", mode="before")
    @classmethod
    def _no_crafted_model(cls, value: Any) -> Any:
        if value == "crafted-model":
            raise _rule(f"adversary.mode crafted-model is a dishonest server's attack, but adversary.role is {_role_name(cls)}; "
                        "set adversary.role: server")
        return value

    @field_validator("isolate", mode="before")
    @classmethod
    def _no_isolation(cls, value: Any) -> Any:
        if value is True:
            raise _rule("adversary.isolate needs adversary.role: server")
        return value

    @field_validator("sent_to", mode="before")
    @classmethod
    def _sent_to_victim(cls, value: Any) -> Any:
        if value == "all":
            raise _rule(f"adversary.sent_to: all makes the server send every client its ascended model, but adversary.role is "
                        f"{_role_name(cls)}; set adversary.role: server or sent_to: victim")
        return value


def _role_name(cls: type[_Adversary]) -> str:
    return str(cls.model_fields["role"].default)


class ParticipantAdversary(_NotServer):
    """A curious participant (docs/design.md, section 2.2): a client that attacks the others; `victim`
    is its own client id.
    """

    role: Literal["participant"] = Field("participant", description="who attacks: server (curious server), participant (curious client) or none")
    victim: int = Field(0, ge=0, description="the participant's own client id (the attacker, not its target)")

    @property
    def own_client(self) -> int:
        """The attacking participant's partition id (`victim` in config.yaml)."""
        return self.victim


class NoAdversary(_NotServer):
    """No adversary: an honest run; the other keys are kept but nothing acts."""

    role: Literal["none"] = Field("none", description="who attacks: server (curious server), participant (curious client) or none")


def _role_of(value: Any) -> str:
    """The role that validates an `adversary` mapping (server when absent, as the key's default)."""
    role = value.get("role", "server") if isinstance(value, dict) else getattr(value, "role", "server")
    return role if role in ROLES else "server"


AdversaryConfig = Annotated[Annotated[ServerAdversary, Tag("server")] | Annotated[ParticipantAdversary, Tag("participant")]
                            | Annotated[NoAdversary, Tag("none")], Discriminator(_role_of)]
"""The `adversary` section: one of the three roles, chosen by `role`."""


class DPSGDConfig(Section):
    """Client-side DP-SGD (Opacus): per-example clipping and Gaussian noise in every local step."""

    noise_multiplier: float = Field(1.0, ge=0, description="Gaussian noise std over the clipping norm (Opacus)")
    max_grad_norm: float = Field(1.0, gt=0, description="per-example gradient clipping norm (L2)")
    delta: float = Field(1e-5, gt=0, lt=1, description="delta of the (epsilon, delta) guarantee")
    accountant: Literal["rdp", "prv"] = Field("rdp", description="Opacus privacy accountant: rdp or prv")


class DefenseConfig(Section):
    secure_aggregation: bool = Field(False, description="the server sees only the aggregate of the clients' updates")
    dp_sgd: DPSGDConfig | None = Field(None, description="client DP-SGD (Opacus): {noise_multiplier, max_grad_norm, delta, accountant}; null: plain SGD")


class BackendConfig(Section):
    cpus_per_client: float = Field(1, gt=0, description="CPUs Ray reserves per simulated client (also its torch threads)")
    gpus_per_client: float = Field(0, ge=0, description="GPUs (fractions allowed) Ray reserves per simulated client")
    ray_address: str | None = Field(None, description="address of a running Ray cluster; null: start a local one")
    engine: Literal["ray", "in-process"] = Field("ray", description="ray: Flower's Ray simulation; in-process: the clients run one "
                                                 "after another in fedsim's own process (quick small runs, debugging; same records)")


class RecordConfig(Section):
    dtype: Literal["float32", "float16"] = Field("float32", description="dtype of recorded parameters; float16 halves the run folder (records rounded)")
    clients: Literal["all", "victim"] = Field(
        "all", description="whose returned parameters each round keeps: all (every client heard) or victim (adversary.victim's, plus "
                           "record.references others); aggregates and broadcasts are always kept, and the manifest lists every client heard")
    references: int = Field(0, ge=0, description="with clients: victim, also keep K other clients' parameters per round, the references "
                            "fedmia, lira and rmia calibrate against: the K heard that round with the smallest partition ids (the victim aside)")

    def kept_references(self) -> int | None:
        """How many other clients' parameters a round keeps at most: None for every client heard (`clients: all`)."""
        return None if self.clients == "all" else self.references


class FaultsConfig(Section):
    client_error_rate: float = Field(0.0, ge=0, lt=1, description="chance per round and client that its training raises")
    client_dropout_rate: float = Field(0.0, ge=0, lt=1, description="chance per round and client that it never replies")
    max_failed_rounds: int | None = Field(None, ge=0, description="rounds without any client update the run tolerates before it stops "
                                          "as failed; null: none without injected faults, unlimited with them")

    def failed_round_limit(self) -> int | None:
        """`max_failed_rounds` resolved: None means no limit."""
        if self.max_failed_rounds is not None:
            return self.max_failed_rounds
        return None if self.client_error_rate > 0 or self.client_dropout_rate > 0 else 0


class AttackConfig(Section):
    """One inference attack: its registry name (or a user's attack class, 'package.module:Class') and
    arguments (checked against the attack's declared parameters by `attackers.inference.registry`).
    In YAML either a bare name or `{name, args}`.
    """

    name: str = Field(description="registry name of the attack, e.g. loss, nasr, or a user's attack class as 'package.module:Class'")
    args: dict[str, Any] = Field(default_factory=dict, description="the attack's parameters (see its Params)")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_serializer(mode="wrap")
    def _as_name(self, handler: Any) -> Any:
        return self.name if not self.args else handler(self)  # a bare name stays a bare name in config.yaml


class FeaturesConfig(Section):
    memory_budget_gib: float = Field(2.0, gt=0, description="GiB per chunk: per-example features are computed in chunks that fit this budget")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="per-example features and attack training: auto (cuda when present), cpu or cuda")


class AuditConfig(Section):
    """Canaries for the one-run privacy audit (Steinke, Nasr and Jagielski 2023)."""

    canaries: int = Field(0, ge=0, description="records from the unused pool, each put into the victim's data with probability 1/2")
    guesses: int = Field(20, ge=1, description="the audit guesses the guesses/2 highest-scored canaries in, as many lowest out")


class ExportConfig(Section):
    """Copies of a run's per-round metrics for other tools; they change nothing the run records."""

    tensorboard: bool = Field(False, description="write TensorBoard event files under RUN/tensorboard/: per round the training metrics and "
                              "each attack's AUC and TPR@FPR (needs the tensorboard package: pip install 'fedsim[tensorboard]')")


class AppConfig(Section):
    """An audited Flower app (`fedsim audit APP_DIR`): where it lives and how fedsim reads its data."""

    dir: str | None = Field(None, description="the app's folder (the one holding its pyproject.toml); set by fedsim audit")
    data: str = Field(description="the app's data function 'package.module:name', called as f(partition_id, num_partitions, **data_args) "
                      "and returning (train, test): a client's training records (its members) and records it holds out (non-members); "
                      "each a DataLoader, a torch Dataset, a Hugging Face Dataset or an (x, y) pair of arrays")
    data_args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the app's data function beyond the partition")
    features: str = Field("image", description="the feature key of a record that is a mapping (e.g. a Hugging Face row)")
    label: str = Field("label", description="the label key of a record that is a mapping")
    rounds_key: str = Field("num-server-rounds", description="the app's run-config key holding its number of rounds")
    train_schedule: bool = Field(False, description="fedsim's train section (lr, batch_size, local_epochs, optimizer, momentum) states how "
                                 "the app trains locally, so the reconstruction attacks may use it; false: they treat each update as one gradient")


class Config(Section):
    name: str = Field("quickstart", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="names the run folder")
    seed: int = Field(0, description="seeds the ledger, the initial model, client shuffling and sampling")
    data: DataConfig = Field(default_factory=DataConfig, description="the data set and how it is split into members and non-members")
    model: ModelConfig = Field(default_factory=ModelConfig, description="the model every client trains")
    train: TrainConfig = Field(default_factory=TrainConfig, description="rounds and local training")
    strategy: StrategyConfig = Field(default_factory=StrategyConfig, description="the server's aggregation strategy")
    defense: DefenseConfig = Field(default_factory=DefenseConfig, description="secure aggregation and client DP-SGD")
    adversary: AdversaryConfig = Field(default_factory=ServerAdversary, description="the threat model: who attacks, how, and whom")
    attacks: list[AttackConfig] = Field(default_factory=lambda: [AttackConfig(name="loss"), AttackConfig(name="nasr")],
                                        description="inference attacks run on the recorded run: names or {name, args}")
    reconstructions: list[AttackConfig] = Field(default_factory=list, description="reconstruction attacks run on the recorded run "
                                                "(inverting_gradients, imprint or 'package.module:Class'): names or {name, args}; "
                                                "[]: none (metrics/reconstruction.csv is written only when some are listed)")
    headline: str | None = Field(None, description="the attack whose leakage (last observed round) and canary bound head the report and "
                                 "the privacy audit, fixed before the run; null: the first attack listed in attacks")
    attack_seeds: int = Field(3, ge=1, description="fits of each learned attack, with different seeds; leakage.csv reports their mean and standard deviation")
    observe_rounds: list[int] | None = Field(None, description="snapshots the multi-round attacks combine; null: all recorded")
    observe_every: int | None = Field(None, ge=1, description="observe rounds k, 2k, ... and the last (follows train.rounds); null: see observe_rounds")
    backend: BackendConfig = Field(default_factory=BackendConfig, description="Ray resources of the simulation")
    features: FeaturesConfig = Field(default_factory=FeaturesConfig, description="how per-example features are computed")
    faults: FaultsConfig = Field(default_factory=FaultsConfig, description="injected client faults, drawn from (seed, round, client)")
    record: RecordConfig = Field(default_factory=RecordConfig, description="how the run folder stores parameters")
    audit: AuditConfig = Field(default_factory=AuditConfig, description="canaries of the one-run privacy audit (Steinke et al. 2023)")
    export: ExportConfig = Field(default_factory=ExportConfig, description="exports of the per-round metrics to other tools (TensorBoard)")
    app: AppConfig | None = Field(None, description="set by fedsim audit: the audited Flower app and how to read its data; null for fedsim's own federations")

    _notes: list[str] = PrivateAttr(default_factory=list)

    @property
    def notes(self) -> list[str]:
        """What loading adjusted on the user's behalf (e.g. observed rounds beyond a shortened run), one line each."""
        return self._notes

    def observed_rounds(self) -> list[int] | None:
        """The snapshots the multi-round attacks combine.

        Returns
        -------
        list of int or None
            `observe_rounds` when given; with `observe_every: k`, the rounds k, 2k, ... up to
            `train.rounds` and the last round; None (every recorded round) when neither is set.
        """
        if self.observe_rounds is not None:
            return self.observe_rounds
        if self.observe_every is not None:
            return sorted(set(range(self.observe_every, self.train.rounds + 1, self.observe_every)) | {self.train.rounds})
        return None

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if self.observe_rounds is not None and self.observe_every is not None:
            raise ValueError("observe_rounds and observe_every are both set; keep one (observe_every follows train.rounds)")
        if self.headline is not None and self.headline not in [attack.name for attack in self.attacks]:
            raise ValueError(f"headline is {self.headline}, which is not listed in attacks ({', '.join(a.name for a in self.attacks) or 'none'}); "
                             "name one of them, or null for the first")
        if self.adversary.victim >= self.data.num_clients:
            raise ValueError(
                f"adversary.victim is {self.adversary.victim} but there are only "
                f"{self.data.num_clients} clients (ids 0..{self.data.num_clients - 1})"
            )
        if self.adversary.mode == "crafted-model" and self.record.dtype != "float32":
            raise ValueError("adversary.mode crafted-model: a trap fires on its record by a margin below float16's rounding, so recorded "
                             "float16 traps cannot be read back; set record.dtype: float32")
        if self.adversary.mode == "crafted-model" and self.defense.secure_aggregation and (
                self.data.partition != "iid" or self.data.records_per_client is None or self.strategy.name != "fedavg"):
            raise ValueError("adversary.mode crafted-model under defense.secure_aggregation reads the aggregate against the equal-weight "
                             "mean of what was sent, exact only for strategy fedavg over equal clients; use strategy.name: fedavg, "
                             "data.partition: iid and a fixed data.records_per_client")
        if self.defense.dp_sgd is not None and self.strategy_args("proximal_mu"):
            raise ValueError("fedprox's proximal term cannot be combined with defense.dp_sgd (Opacus would drop its gradient); "
                             "set proximal_mu: 0 or remove dp_sgd")
        if self.adversary.isolate and self.defense.secure_aggregation:
            raise ValueError("adversary.isolate cannot work under defense.secure_aggregation: the server cannot take the victim's update out of a secure sum")
        for key, rounds in (("adversary.active_rounds", self.adversary.active_rounds), ("observe_rounds", self.observe_rounds)):
            outside = [r for r in rounds or [] if not 1 <= r <= self.train.rounds]
            if outside:
                raise ValueError(f"{key} has round {outside[0]}, outside 1..{self.train.rounds}")
            if rounds is not None and not rounds:
                raise ValueError(f"{key} is empty; list rounds or use null for all")
        if self.record.references and self.record.clients == "all":
            raise ValueError("record.references chooses the other clients kept beside the victim under record.clients: victim; "
                             "record.clients: all keeps every client already: remove record.references or set record.clients: victim")
        if self.record.clients == "victim" and self.adversary.role == "none":
            raise ValueError("record.clients: victim keeps adversary.victim's parameters, and there is no adversary (adversary.role: none); "
                             "set record.clients: all or name an adversary")
        if self.audit.canaries and self.adversary.role != "server":
            raise ValueError("audit.canaries go into the victim's data for a curious server to audit; set adversary.role: server or audit.canaries: 0")
        if self.adversary.role != "none":
            if self.adversary.target_records < 2:
                raise ValueError("adversary.target_records must be at least 2 (one member, one non-member) when there is an adversary")
            if self.data.nonmembers < 4:
                raise ValueError("data.nonmembers must be at least 4 when there is an adversary: it needs known and target non-members")
        return self

    def headline_attack(self) -> str | None:
        """The attack the report's headline and privacy audit are read from, fixed before the run.

        Returns
        -------
        str or None
            `headline` when set, else the first attack listed in `attacks`; None without attacks.
        """
        return self.headline or (self.attacks[0].name if self.attacks else None)

    def strategy_args(self, key: str) -> Any:
        """`key` from the args of the strategy or any base it wraps (None when absent)."""
        spec: StrategyConfig | None = self.strategy
        while spec is not None:
            if key in spec.args:
                return spec.args[key]
            spec = spec.base
        return None

    def digest(self) -> str:
        """sha256 of the canonical JSON of the resolved config: names a configuration exactly."""
        # A config without an audited app or a headline hashes as it did before those keys existed.
        unset = {key for key in ("app", "headline") if getattr(self, key) is None}
        if not self.reconstructions:
            unset.add("reconstructions")  # nor one without reconstruction attacks
        if self.export == ExportConfig():
            unset.add("export")  # nor one without exports: they change no record
        exclude: dict[str, Any] = dict.fromkeys(unset, True)
        if self.app is not None and not self.app.train_schedule:
            exclude["app"] = {"train_schedule": True}  # nor an audit whose train section states no schedule
        if self.record.clients == "all" and not self.record.references:
            exclude["record"] = {"clients": True, "references": True}  # nor one keeping every client, as runs always did
        canonical = json.dumps(self.model_dump(mode="json", exclude=exclude or None), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _apply_override(tree: dict[str, Any], assignment: str) -> None:
    """Set tree[a][b] = value for 'a.b=value'; the value is read as a YAML scalar or list."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise FedsimError(f"--set {assignment!r}: expected key=value, e.g. --set train.rounds=5")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise FedsimError(f"--set {assignment!r}: the value is not valid YAML ({problem})") from None
    node = tree
    *parents, leaf = key.strip().split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise FedsimError(f"--set {assignment!r}: {part!r} is not a section, so it has no keys")
        node = child
    node[leaf] = value


def _describe(error: ValidationError, source: str) -> str:
    """The first validation problem as one line: where, what, how to fix."""
    first = error.errors()[0]
    loc = list(first["loc"])
    if loc[:1] == ["adversary"] and len(loc) > 1 and loc[1] in ROLES:
        del loc[1]  # the role that validated the section, not a key
    kind = first["type"]
    where = "(top level)" if kind == RULE else ".".join(str(p) for p in loc) or "(top level)"
    if kind == "extra_forbidden":
        return f"{source}: unknown key {where!r}; remove it or check its spelling against the README's config reference"
    message = first["msg"].removeprefix("Value error, ")
    got = first.get("input")
    shown = "" if isinstance(got, dict) or kind in ("value_error", RULE) else f" (got {got!r})"
    return f"{source}: {where}: {message}{shown}"


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), default_file: bool = True) -> Config:
    """Read and validate a YAML config with `--set key=value` overrides.

    Rounds that depend on `train.rounds` follow it: when `--set train.rounds=N` shortens the
    run and the file (not a `--set`) listed `observe_rounds` or `adversary.active_rounds`,
    entries above N are dropped with a note (`Config.notes`); values given with `--set` are
    kept and checked. `observe_every` follows `train.rounds` by construction.

    Parameters
    ----------
    path : str or Path, optional
        The YAML file. None: the quickstart shipped with fedsim (`default_file`), whatever the
        working folder; with `default_file=False`, the schema's defaults alone.
    overrides : sequence of str
        'a.b=value' assignments, values read as YAML, applied before validation.
    default_file : bool
        Whether a missing `path` means the shipped quickstart.

    Returns
    -------
    Config
        The validated configuration.

    Raises
    ------
    FedsimError
        One line (what, where, how to fix) for a missing or malformed file or an invalid value.
    """
    if path is None and default_file:
        path = quickstart_path()
    tree: dict[str, Any] = {}
    source = "built-in default config"
    if path is not None:
        source = str(path)
        file = Path(path)
        if not file.is_file():
            raise FedsimError(f"{file}: config file not found; give the path of a YAML file (see configs/)")
        try:
            loaded = yaml.safe_load(file.read_text())
        except UnicodeDecodeError:
            raise FedsimError(f"{file}: not a text file (not UTF-8); give a YAML config") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = " ".join(str(getattr(exc, "problem", None) or exc).split())  # one line, whatever the YAML error
            raise FedsimError(f"{file}: malformed YAML{at}: {problem}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise FedsimError(f"{file}: expected a mapping of config keys at the top level")
        tree = loaded
    return config_from_tree(tree, overrides, source)


def config_from_tree(tree: dict[str, Any], overrides: list[str] | tuple[str, ...] = (), source: str = "config") -> Config:
    """Validate a config given as a mapping (e.g. `Config.model_dump()`), after `overrides`.

    Parameters
    ----------
    tree : dict
        Config keys and values, as a YAML file holds them; changed in place by the overrides.
    overrides : sequence of str
        'a.b=value' assignments (see `load_config`).
    source : str
        What the mapping came from, for messages.

    Returns
    -------
    Config
        The validated configuration (with `notes` where rounds followed `train.rounds`).

    Raises
    ------
    FedsimError
        One line naming the source, the key and the problem.
    """
    set_keys = {assignment.partition("=")[0].strip() for assignment in overrides}
    for assignment in overrides:
        _apply_override(tree, assignment)
    notes = _follow_rounds(tree, set_keys) if "train.rounds" in set_keys else []
    try:
        config = Config.model_validate(tree)
    except ValidationError as exc:
        raise FedsimError(_describe(exc, source)) from None
    config._notes.extend(notes)
    return config


def _follow_rounds(tree: dict[str, Any], set_keys: set[str]) -> list[str]:
    """Drop the file's round lists' entries beyond a `--set train.rounds`; return the notes."""
    rounds = tree.get("train", {}).get("rounds") if isinstance(tree.get("train"), dict) else None
    if not isinstance(rounds, int) or rounds < 1:
        return []
    notes = []
    for key in ("observe_rounds", "adversary.active_rounds"):
        *parents, leaf = key.split(".")
        node: Any = tree
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        listed = node.get(leaf) if isinstance(node, dict) else None
        if key in set_keys or not isinstance(listed, list) or not all(isinstance(r, int) for r in listed):
            continue
        kept = [r for r in listed if r <= rounds]
        if kept == listed:
            continue
        if not kept and leaf == "observe_rounds":
            kept = [rounds]
        if not kept:
            raise FedsimError(f"{key}: every round the file lists ({listed}) lies beyond --set train.rounds={rounds}; "
                              f"give the rounds with --set {key}=[...] or null")
        node[leaf] = kept
        notes.append(f"{key} {listed} from the file follows --set train.rounds={rounds}: using {kept}")
    return notes
