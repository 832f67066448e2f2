"""`reconciler invoke ENDPOINT` and `reconciler logs DEPLOYMENT`: use what apply started."""
from __future__ import annotations

import http.client
import ssl
import sys
from pathlib import Path
from urllib.parse import urlsplit

import click

from reconciler.cli import exits
from reconciler.cli.common import default_stores, handle_errors, store_for
from reconciler.cli.drivers import driver_named
from reconciler.errors import ReconcilerError


def which_stack(command):
    command = click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path),
                           help="State file (default: search every default state, and state/*.json here).")(command)
    command = click.option("--stack", "stack_ref", metavar="DIR_OR_NAME", help="Stack directory or name.")(command)
    return command


def find_record(kind: str, name: str, stack_ref, state_path):
    """The record `kind.name` (a deployment may be `endpoint/name` or a unique `name`)."""
    if stack_ref or state_path:
        stores = [store_for(stack_ref, state_path)]
    else:
        stores = default_stores()
    found = []
    for store in stores:
        for address, record in store.read().records.items():
            if address.is_derived or address.kind != kind:
                continue
            if address.name == name or (kind == "deployment" and address.short_name == name):
                found.append((store, record))
    if not found:
        raise ReconcilerError(f"no {kind} named {name!r} in state",
                              "apply the stack first, or pass --stack / --state")
    if len(found) > 1:
        raise ReconcilerError(f"{kind} name {name!r} is ambiguous: " + ", ".join(str(r.address) for _, r in found),
                              "pass ENDPOINT/NAME or --stack")
    return found[0]


def post(url: str, body: bytes, headers: dict, timeout: float, ca: str | None = None) -> tuple[int, dict, bytes]:
    """POST to an endpoint; an https one is verified (against `ca`, else the system's trust)."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        from reconciler.drivers.common.tls import client_context
        connection = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout,
                                                 context=client_context(ca))
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request("POST", parts.path + (f"?{parts.query}" if parts.query else ""), body=body,
                           headers={"Content-Type": "application/json", **headers})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    except ssl.SSLCertVerificationError as error:
        raise ReconcilerError(f"the certificate of {url} does not verify: {error.verify_message}",
                              f"it is checked against {ca or 'the system trust store'} (stack settings "
                              "endpoints.<name>.tls.ca)") from error
    except OSError as error:
        raise ReconcilerError(f"cannot reach {url}: {error}",
                              "check `reconciler drift` or `reconciler logs`; the container may be down") from error
    finally:
        connection.close()


def endpoint_token(record) -> dict:
    """A fresh token for an aml_token endpoint, signed with the secret its gateway checks."""
    import time

    from reconciler.tokens import issue_token
    secret = (record.outputs.get("keys") or {}).get("token")
    if not secret:
        raise ReconcilerError(f"endpoint {record.spec['name']} has no token secret in state",
                              "apply the stack again: an endpoint with auth_mode aml_token gets one")
    return issue_token(record.spec["name"], secret, time.time())


@click.command()
@click.argument("endpoint")
@click.option("--request-file", type=click.File("rb"), required=True, help="JSON body to send.")
@click.option("--deployment", "deployment_name", help="Send to this deployment, ignoring the traffic split.")
@which_stack
@handle_errors()
def invoke(endpoint, request_file, deployment_name, stack_ref, state_path):
    """Send a scoring request to ENDPOINT's gateway, as `az ml online-endpoint invoke` does."""
    _, record = find_record("endpoint", endpoint, stack_ref, state_path)
    headers = {}
    if record.spec["auth_mode"] == "key":
        headers["Authorization"] = f"Bearer {record.outputs['keys']['primary']}"
    elif record.spec["auth_mode"] == "aml_token":
        headers["Authorization"] = f"Bearer {endpoint_token(record)['accessToken']}"
    if deployment_name:
        headers["azureml-model-deployment"] = deployment_name
    status, _, body = post(record.outputs["scoring_uri"], request_file.read(), headers, timeout=60,
                           ca=(record.outputs.get("tls") or {}).get("ca"))
    click.echo(body.decode("utf-8", "replace").rstrip())
    if status >= 400:
        click.echo(f"Error: endpoint answered HTTP {status}", err=True)
        sys.exit(exits.ERROR)


@click.command()
@click.argument("deployment")
@click.option("--lines", "-n", type=click.IntRange(1, 100000), default=50, show_default=True)
@click.option("--gateway", is_flag=True,
              help="DEPLOYMENT names an endpoint: print its gateway's log (one JSON line per request).")
@which_stack
@handle_errors()
def logs(deployment, lines, gateway, stack_ref, state_path):
    """Print the last log lines of every container of DEPLOYMENT (ENDPOINT/NAME or NAME), the build log of environment.NAME:VERSION, or --gateway those of an endpoint's gateway.

    With --gateway, DEPLOYMENT names an endpoint; its gateway logs one JSON line per request."""  # noqa: E501
    if gateway:
        store, record = find_record("endpoint", deployment, stack_ref, state_path)
    elif deployment.startswith("environment."):
        store, record = find_record("environment", deployment.removeprefix("environment."), stack_ref, state_path)
    else:
        store, record = find_record("deployment", deployment, stack_ref, state_path)
    for name, text in driver_named(record.driver).logs(record, lines):
        click.echo(f"==> {name} <==")
        click.echo(text.rstrip())
