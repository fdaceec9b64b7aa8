"""Loading and unloading registered versions while serving (V2 repository extension)."""

import httpx
import pytest

from modelmon.registry import register_model
from modelmon.stack.processes import stop_process
from tests.conftest import start_server

pytestmark = pytest.mark.slow


def test_a_new_version_is_loaded_and_the_old_unloaded_without_a_restart(tmp_path, shop_model, shop_frame, cancer_model, cancer_frame):
    registry = tmp_path / "registry"
    register_model(shop_model, name="shop", reference=shop_frame, target="segment", registry=registry)
    server = start_server(registry, tmp_path, "--drain-seconds", "0")
    row = {"instances": [shop_frame.drop(columns="segment").iloc[0].to_dict()]}
    try:
        assert httpx.post(f"{server.url}/v1/models/shop:predict", json=row).json()["model_version"] == "1"
        register_model(shop_model, name="shop", reference=shop_frame, target="segment", registry=registry)
        register_model(cancer_model, name="cancer", registry=registry)

        index = httpx.post(f"{server.url}/v2/repository/index").json()
        assert {(i["name"], i["version"], i["state"]) for i in index} == {
            ("shop", "1", "READY"), ("shop", "2", "UNAVAILABLE"), ("cancer", "1", "UNAVAILABLE")}

        loaded = httpx.post(f"{server.url}/v2/repository/models/shop/load").json()
        assert loaded == {"name": "shop", "version": "2", "loaded": True}
        again = httpx.post(f"{server.url}/v2/repository/models/shop/load", json={"parameters": {"version": "2"}}).json()
        assert again["loaded"] is False  # idempotent
        # Unversioned requests go to the newest served version; version 1 is still there.
        assert httpx.post(f"{server.url}/v1/models/shop:predict", json=row).json()["model_version"] == "2"
        assert httpx.get(f"{server.url}/v2/models/shop/versions/1").status_code == 200
        assert 'modelmon_model_info{flavor="sklearn",model="shop",version="2"} 1.0' in httpx.get(f"{server.url}/metrics").text

        unloaded = httpx.post(f"{server.url}/v2/repository/models/shop/unload", json={"parameters": {"version": "1"}})
        assert unloaded.json() == {"name": "shop", "unloaded": ["1"]}
        assert httpx.get(f"{server.url}/v2/models/shop/versions/1").status_code == 404
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'model="shop",version="1"' not in metrics and 'model="shop",version="2"' in metrics

        assert httpx.post(f"{server.url}/v2/repository/models/nope/load").status_code == 404
        assert httpx.post(f"{server.url}/v2/repository/models/shop/load", json={"parameters": {"version": "9"}}).status_code == 404
        assert httpx.post(f"{server.url}/v2/repository/models/shop/unload", json={"parameters": {"version": "1"}}).status_code == 404
        assert httpx.post(f"{server.url}/v2/repository/models/shop/reload").status_code == 404
    finally:
        stop_process(server.process)


def test_repository_needs_the_token_when_one_is_set(tmp_path, shop_model, shop_frame):
    registry = tmp_path / "registry"
    register_model(shop_model, name="shop", reference=shop_frame, target="segment", registry=registry)
    (tmp_path / "token").write_text("t0ken")
    server = start_server(registry, tmp_path, "--drain-seconds", "0", "--api-token-file", str(tmp_path / "token"))
    try:
        url = f"{server.url}/v2/repository/models/shop/unload"
        assert httpx.post(url).status_code == 401
        assert httpx.post(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.post(url, headers={"Authorization": "Bearer t0ken"}).json() == {"name": "shop", "unloaded": ["1"]}
    finally:
        stop_process(server.process)
