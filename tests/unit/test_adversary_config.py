"""The adversary section: one type per role, the same YAML keys for each, and one `acts_in`."""

import pytest
from pydantic import ValidationError

from fedsim.core.config import NoAdversary, ParticipantAdversary, ServerAdversary, load_config
from fedsim.core.errors import FedsimError

KEYS = ["role", "mode", "isolate", "victim", "target_records", "gamma", "step_norm", "active_rounds", "sent_to"]


def adversary(*overrides):
    return load_config(None, [f"adversary.{o}" for o in overrides], default_file=False).adversary


@pytest.mark.parametrize(("role", "kind"), [("server", ServerAdversary), ("participant", ParticipantAdversary), ("none", NoAdversary)])
def test_the_role_picks_the_type_and_every_role_writes_the_same_keys(role, kind):
    section = adversary(f"role={role}")
    assert type(section) is kind
    assert list(section.model_dump()) == KEYS  # config.yaml and Config.digest() see the same keys whatever the role
    assert section.model_dump() == {**ServerAdversary().model_dump(), "role": role}  # and the same defaults


def test_a_missing_role_is_the_server():
    assert type(load_config(None, ["adversary={mode: gradient-ascent}"], default_file=False).adversary) is ServerAdversary


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["mode=passive"], [False, False, False, False]),
        (["mode=gradient-ascent"], [True, True, True, True]),
        (["mode=gradient-ascent", "active_rounds=[2, 4]"], [False, True, False, True]),
        (["mode=crafted-model", "active_rounds=[3]"], [False, False, True, False]),
        (["role=participant", "mode=gradient-ascent", "active_rounds=[1, 3]"], [True, False, True, False]),
        (["role=participant", "mode=passive", "active_rounds=[1]"], [False, False, False, False]),
        (["role=none", "mode=gradient-ascent"], [False, False, False, False]),  # accepted, but nobody acts
    ],
)
def test_acts_in_is_an_active_mode_in_an_active_round(overrides, expected):
    section = load_config(None, ["train.rounds=4", *(f"adversary.{o}" for o in overrides)], default_file=False).adversary
    assert [section.acts_in(r) for r in (1, 2, 3, 4)] == expected


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["role=participant", "isolate=true"], "(top level): adversary.isolate needs adversary.role: server"),
        (["role=none", "mode=crafted-model"],
         "(top level): adversary.mode crafted-model is a dishonest server's attack, but adversary.role is none; set adversary.role: server"),
        (["role=participant", "sent_to=all"], "(top level): adversary.sent_to: all makes the server send every client its ascended model, "
                                              "but adversary.role is participant; set adversary.role: server or sent_to: victim"),
        (["mode=crafted-model", "isolate=true"], "(top level): adversary.mode crafted-model already keeps the victim's crafted replies out "
                                                 "of the aggregate; set adversary.isolate: false"),
        (["role=attacker"], "adversary.role: Input should be 'server', 'participant' or 'none' (got 'attacker')"),
        (["role=participant", "gamma=0"], "adversary.gamma: Input should be greater than 0 (got 0)"),
        (["role=participant", "isolat=true"], "unknown key 'adversary.isolat'"),
    ],
)
def test_what_a_role_cannot_do_is_one_line_naming_the_keys(overrides, message):
    with pytest.raises(FedsimError) as error:
        adversary(*overrides)
    assert str(error.value) == f"built-in default config: {message}" or str(error.value).startswith(f"built-in default config: {message};")


def test_a_role_keeps_its_limits_when_a_key_is_set_later():
    section = adversary("role=participant", "victim=2")
    assert section.own_client == 2
    with pytest.raises(ValidationError, match="adversary.isolate needs adversary.role: server"):
        section.isolate = True
    with pytest.raises(ValidationError, match="dishonest server's attack"):
        section.mode = "crafted-model"
