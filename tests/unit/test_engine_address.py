"""Remote engines without an engine (issue 17): where DOCKER_HOST says the engine is, where its
gateways listen and scoring URIs point, what a failed connection says, and which images a plan
needs there. Tables of cases -> compact text."""
from __future__ import annotations

from reconciler.addresses import Address
from reconciler.drivers.common.engine import connection_error, engine_address, required_images


def _engine(docker_host: str | None) -> str:
    engine = engine_address({"DOCKER_HOST": docker_host} if docker_host is not None else {})
    return (f"{engine.scheme} host={engine.host} uri={engine.uri_host} user={engine.user} port={engine.port} "
            f"remote={engine.remote} listen={engine.listen_address}")


def test_engine_address_from_docker_host():
    cases = [None, "", "unix:///var/run/docker.sock", "unix:///run/user/1000/docker.sock",
             "tcp://10.0.0.5:2376", "tcp://build-1.example:2376", "https://10.0.0.5:2376",
             "ssh://deploy@build-1", "ssh://deploy@10.0.0.5:2222", "tcp://[fd00::5]:2376", "10.0.0.5:2375"]
    assert "\n".join(f"{case!r}: {_engine(case)}" for case in cases) == "\n".join([
        "None: unix host=127.0.0.1 uri=127.0.0.1 user=None port=None remote=False listen=127.0.0.1",
        "'': unix host=127.0.0.1 uri=127.0.0.1 user=None port=None remote=False listen=127.0.0.1",
        "'unix:///var/run/docker.sock': unix host=127.0.0.1 uri=127.0.0.1 user=None port=None remote=False listen=127.0.0.1",
        "'unix:///run/user/1000/docker.sock': unix host=127.0.0.1 uri=127.0.0.1 user=None port=None remote=False "
        "listen=127.0.0.1",
        "'tcp://10.0.0.5:2376': tcp host=10.0.0.5 uri=10.0.0.5 user=None port=2376 remote=True listen=0.0.0.0",
        "'tcp://build-1.example:2376': tcp host=build-1.example uri=build-1.example user=None port=2376 remote=True "
        "listen=0.0.0.0",
        "'https://10.0.0.5:2376': https host=10.0.0.5 uri=10.0.0.5 user=None port=2376 remote=True listen=0.0.0.0",
        "'ssh://deploy@build-1': ssh host=build-1 uri=build-1 user=deploy port=None remote=True listen=0.0.0.0",
        "'ssh://deploy@10.0.0.5:2222': ssh host=10.0.0.5 uri=10.0.0.5 user=deploy port=2222 remote=True "
        "listen=0.0.0.0",
        "'tcp://[fd00::5]:2376': tcp host=fd00::5 uri=[fd00::5] user=None port=2376 remote=True listen=0.0.0.0",
        "'10.0.0.5:2375': tcp host=10.0.0.5 uri=10.0.0.5 user=None port=2375 remote=True listen=0.0.0.0",
    ])


def test_connection_errors_name_the_engine_what_failed_and_what_to_do():
    cases = [
        ("tcp://10.0.0.5:2376", True, "Caused by SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] "
                                      "certificate verify failed: unable to get local issuer certificate'))"),
        ("tcp://10.0.0.5:2376", True, "SSLError(1, '[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate "
                                      "required')"),
        ("tcp://10.0.0.5:2376", False, "('Connection aborted.', RemoteDisconnected('Remote end closed connection'))"),
        ("tcp://10.0.0.5:2376", True, "Max retries exceeded (Caused by NewConnectionError(Connection refused))"),
        ("ssh://deploy@build-1", False, "deploy@build-1: Permission denied (publickey)."),
        ("ssh://deploy@build-1", False, "Host key verification failed."),
        ("ssh://deploy@build-1", False, "bash: line 1: docker: command not found"),
        ("ssh://deploy@build-1", False, "ssh: connect to host build-1 port 22: Connection refused"),
        ("unix:///var/run/docker.sock", False, "('Connection aborted.', PermissionError(13, 'Permission denied'))"),
        ("unix:///var/run/docker.sock", False, "('Connection aborted.', FileNotFoundError(2, 'No such file'))"),
    ]
    lines = []
    for url, tls, reason in cases:
        message, hint = connection_error(engine_address({"DOCKER_HOST": url}), reason, tls)
        lines.append(f"{url} | {message.split(': ', 1)[1][:70]} | {hint[:60]}")
    assert "\n".join(lines) == "\n".join([
        "tcp://10.0.0.5:2376 | TLS verification of the engine's certificate failed (Caused by SSLErro"
        ' | DOCKER_CERT_PATH/ca.pem must be the CA that signed the engin',
        "tcp://10.0.0.5:2376 | the engine refused this client's TLS certificate (SSLError(1, '[SSL: T"
        ' | DOCKER_CERT_PATH/cert.pem and key.pem must be a client certi',
        'tcp://10.0.0.5:2376 | the engine speaks TLS and this client does not'
        ' | set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH to a directory ',
        'tcp://10.0.0.5:2376 | Max retries exceeded (Caused by NewConnectionError(Connection refused)'
        ' | check that dockerd listens on 10.0.0.5:2376 and that this ma',
        'ssh://deploy@build-1 | ssh authentication as deploy@build-1 failed (deploy@build-1: Permissio'
        ' | `ssh deploy@build-1 docker version` must work without a prom',
        'ssh://deploy@build-1 | the ssh host key of build-1 is not known or has changed'
        " | check the host's key and add it to ~/.ssh/known_hosts (`ssh-",
        'ssh://deploy@build-1 | ssh to deploy@build-1 works but `docker` is not on its PATH'
        " | install the docker CLI on the engine's host (it runs `docker",
        'ssh://deploy@build-1 | ssh: connect to host build-1 port 22: Connection refused'
        ' | check that `ssh deploy@build-1 docker version` works from th',
        "unix:///var/run/docker.sock | ('Connection aborted.', PermissionError(13, 'Permission denied'))"
        ' | the socket unix:///var/run/docker.sock is not readable by th',
        "unix:///var/run/docker.sock | ('Connection aborted.', FileNotFoundError(2, 'No such file'))"
        ' | start dockerd (or set DOCKER_HOST) so that unix:///var/run/d',
    ])


def test_a_remote_engine_needs_the_helper_image_for_model_volumes():
    model = (Address.parse("model.m:1"), {})
    deployment = (Address.parse("deployment.ep/blue"), {"image": "serving:1"})
    endpoint = (Address.parse("endpoint.ep"), {})
    cases = {"model only, local": ([model], False), "model only, remote": ([model], True),
             "deployment, remote": ([deployment], True), "endpoint, local": ([endpoint, deployment], False)}
    assert {name: required_images(specs, "gateway:1", remote) for name, (specs, remote) in cases.items()} == {
        "model only, local": [], "model only, remote": ["gateway:1"],
        "deployment, remote": ["serving:1"], "endpoint, local": ["gateway:1", "serving:1"]}
