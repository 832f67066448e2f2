"""The docker driver on an engine on another host (issue 17): a second dockerd in a network
namespace (remote_engine.py), reached over tcp with TLS client certificates and over ssh. The
demo stack is applied there from the host, invoked over the namespace's address and destroyed;
the host's own engine never gets an object of the stack. Connection failures are clear, exit 1
and change nothing. One namespace engine for the module (it takes ~10 s to start)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import DEMO_IMAGE, GATEWAY_IMAGE, LABEL_STACK, StackRun, invoke_sample
from remote_engine import NS_ADDRESS, NamespaceEngine, make_certificates, missing_tools


@pytest.fixture(scope="module")
def remote(tmp_path_factory, docker_client):
    if os.geteuid() != 0:
        pytest.skip("the namespace engine needs root (ip netns, dockerd)")
    if missing := missing_tools():
        pytest.skip(f"missing {missing}: .ci/run installs them")
    engine = NamespaceEngine(tmp_path_factory.mktemp("remote-engine"))
    try:
        engine.start([DEMO_IMAGE, GATEWAY_IMAGE])
        yield engine
    finally:
        engine.stop()


def _engine_client(remote, docker):
    return docker.DockerClient(base_url=remote.unix_url)


def _host_objects(docker_client, stack: str) -> list[str]:
    label = {"label": f"{LABEL_STACK}={stack}"}
    return ([f"container {c.name}" for c in docker_client.containers.list(all=True, filters=label)]
            + [f"network {n.name}" for n in docker_client.networks.list(filters=label)]
            + [f"volume {v.name}" for v in docker_client.volumes.list(filters=label)])


def _apply_invoke_destroy(remote, docker_client, tmp_path, monkeypatch, env: dict[str, str]) -> None:
    import docker
    inner = _engine_client(remote, docker)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    run = StackRun(tmp_path, inner)
    try:
        run.apply()
        outputs = run.endpoint("half-plus-two")
        assert outputs["scoring_uri"] == f"http://{NS_ADDRESS}:{outputs['port']}/score"
        assert invoke_sample(run, tmp_path) == {"predictions": [2.5, 3.0, 4.5]}
        model = run.records()["model.tfserving-mounted:1"]["outputs"]
        assert inner.volumes.get(model["volume"]).attrs["Labels"][LABEL_STACK] == run.name
        assert run.containers() and not _host_objects(docker_client, run.name)
        # The inner engine shares this machine's disk, so a bind mount would work here by
        # accident: nothing may be bind-mounted (the client's disk is not the engine's).
        mounts = {c.name: [(m["Type"], m["Destination"]) for m in c.attrs["Mounts"]] for c in run.containers()}
        assert all(kind == "volume" for found in mounts.values() for kind, _ in found), mounts
        assert sorted(d for found in mounts.values() for _, d in found) == [
            "/etc/reconciler", "/var/azureml-app/azureml-models/tfserving-mounted/1"], mounts
        drift = run.run("drift", str(run.dir), "--state", str(run.state))
        assert drift.exit_code == 0, drift.output
        destroyed = run.run("destroy", str(run.dir), "--state", str(run.state), "--auto-approve")
        assert destroyed.exit_code == 0, destroyed.output
        assert _host_objects(inner, run.name) == []
        assert _host_objects(docker_client, run.name) == []
    finally:
        run.cleanup()
        for volume in inner.volumes.list(filters={"label": f"{LABEL_STACK}={run.name}"}):
            volume.remove(force=True)


def test_apply_invoke_destroy_over_tls(remote, docker_client, tmp_path, monkeypatch):
    _apply_invoke_destroy(remote, docker_client, tmp_path, monkeypatch, remote.tls_env())


def test_apply_invoke_destroy_over_ssh(remote, docker_client, tmp_path, monkeypatch):
    _apply_invoke_destroy(remote, docker_client, tmp_path, monkeypatch, remote.ssh_env())


def _refused(remote, docker_client, tmp_path, monkeypatch, env: dict[str, str], *expected: str) -> None:
    import docker
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    run = StackRun(tmp_path, _engine_client(remote, docker))
    result = run.apply(expect=1)
    for text in expected:
        assert text in result.output, result.output
    assert not run.state.exists()
    assert run.containers() == [] and _host_objects(docker_client, run.name) == []


def test_tls_verification_failure_is_clear(remote, docker_client, tmp_path, monkeypatch):
    # A client certificate and CA of another authority: the engine's certificate does not verify.
    _, stranger = make_certificates(tmp_path / "other-ca", NS_ADDRESS)
    _refused(remote, docker_client, tmp_path, monkeypatch, {**remote.tls_env(), "DOCKER_CERT_PATH": str(stranger)},
             remote.tcp_url, "TLS verification", "ca.pem")


def test_missing_client_certificates_are_clear(remote, docker_client, tmp_path, monkeypatch):
    _refused(remote, docker_client, tmp_path, monkeypatch,
             {**remote.tls_env(), "DOCKER_CERT_PATH": str(tmp_path / "nowhere")},
             remote.tcp_url, "certificates are incomplete", "cert.pem")


def test_plain_client_on_tls_engine_is_clear(remote, docker_client, tmp_path, monkeypatch):
    monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)
    monkeypatch.delenv("DOCKER_CERT_PATH", raising=False)
    _refused(remote, docker_client, tmp_path, monkeypatch, {"DOCKER_HOST": remote.tcp_url},
             remote.tcp_url, "DOCKER_TLS_VERIFY=1")


def test_ssh_authentication_failure_is_clear(remote, docker_client, tmp_path, monkeypatch):
    # A user whose authorized_keys does not hold the test's key.
    _refused(remote, docker_client, tmp_path, monkeypatch,
             {**remote.ssh_env(), "DOCKER_HOST": f"ssh://nobody@{NS_ADDRESS}"},
             f"ssh://nobody@{NS_ADDRESS}", "ssh authentication as nobody@", "authorized_keys")


def test_content_volumes_are_shared_by_fingerprint_and_released_with_the_last_record(remote, tmp_path, monkeypatch):
    import docker
    inner = _engine_client(remote, docker)
    for key, value in remote.tls_env().items():
        monkeypatch.setenv(key, value)
    run = StackRun(tmp_path, inner)

    def volumes() -> list[str]:
        return sorted(v.name for v in inner.volumes.list(filters={"label": [f"{LABEL_STACK}={run.name}",
                                                                              "org.reconciler.role=content"]}))
    try:
        # A second model of the same files: the same fingerprint, so the same volume.
        (run.dir / "copy.yml").write_text((run.dir / "model.yml").read_text().replace(
            "name: tfserving-mounted", "name: tfserving-copy"))
        run.apply()
        records = run.records()
        shared = records["model.tfserving-mounted:1"]["outputs"]["volume"]
        assert records["model.tfserving-copy:1"]["outputs"]["volume"] == shared and volumes() == [shared]
        (run.dir / "copy.yml").unlink()
        run.apply()
        assert volumes() == [shared], "still listed by the served model"
        assets = run.dir / "half_plus_two" / "00000123" / "assets"
        (assets / "coefficients.json").write_text('{"a": 1.0, "b": 0.0}')
        run.apply()
        changed = run.records()["model.tfserving-mounted:1"]["outputs"]["volume"]
        assert changed != shared and volumes() == [changed], "new content, new volume; the old one released"
        assert invoke_sample(run, tmp_path) == {"predictions": [1.0, 2.0, 5.0]}
        destroyed = run.run("destroy", str(run.dir), "--state", str(run.state), "--auto-approve")
        assert destroyed.exit_code == 0, destroyed.output
        assert volumes() == []
    finally:
        run.cleanup()
        for volume in inner.volumes.list(filters={"label": f"{LABEL_STACK}={run.name}"}):
            volume.remove(force=True)
