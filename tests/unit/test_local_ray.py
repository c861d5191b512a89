"""fedsim's local Ray is its own: a `ray start` elsewhere on the machine is not attached to.

Ray's own address resolution (`ray._private.services.canonicalize_bootstrap_address`, what
`ray.init` calls) decides, without starting Ray: None means "start a new local instance".
"""

from __future__ import annotations

from ray._private import services

from fedsim.engine.simulation import local_init_args


def test_a_local_engine_starts_its_own_ray_where_a_ray_start_left_its_address(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    (tmp_path / "ray_current_cluster").write_text("10.0.0.5:6390")  # what `ray start --head` writes in Ray's temp dir
    assert services.canonicalize_bootstrap_address(None, str(tmp_path)) == "10.0.0.5:6390"  # a bare ray.init() would attach
    args = local_init_args({"_temp_dir": str(tmp_path), "include_dashboard": False})
    assert services.canonicalize_bootstrap_address(args["address"], args["_temp_dir"]) is None
    assert args["include_dashboard"] is False


def test_an_address_given_is_kept():
    assert local_init_args({"address": "10.0.0.5:6379"})["address"] == "10.0.0.5:6379"
