"""What `apply` says while swarm tasks of a roll-out are placed, pull their image and start
(issue 18: pull progress per node and task, the engine's message when a node cannot pull), as
a table: the tasks the engine lists at each poll -> the progress lines. Pure: no engine."""
from __future__ import annotations

from reconciler.drivers.swarm.engine import LABEL_ROLLOUT, most_telling_failure, task_error, task_progress

NODES = {"n1": {"name": "rc-node-1", "state": "ready"}, "n2": {"name": "rc-node-2", "state": "ready"}}
WHAT = "deployment ep/blue"


def task(ident: str, slot: int | None, state: str, node: str | None = None, rollout: str = "v2", err: str = "") -> dict:
    return {"ID": ident, "Slot": slot, **({"NodeID": node} if node else {}), "CreatedAt": ident,
            "Status": {"State": state, **({"Err": err} if err else {})},
            "Spec": {"ContainerSpec": {"Labels": {LABEL_ROLLOUT: rollout}}}}


def lines_over(polls: list[list[dict]]) -> str:
    seen, out = {}, []
    for tasks in polls:
        lines, seen = task_progress(seen, tasks, "v2", NODES, WHAT)
        out += lines
    return "\n".join(out)


def test_each_task_says_once_per_state_where_it_is_and_what_it_does():
    polls = [[task("a", 1, "pending"), task("old", 1, "running", "n1", rollout="v1")],
             [task("a", 1, "preparing", "n2"), task("b", 2, "preparing", "n1")],
             [task("a", 1, "preparing", "n2"), task("b", 2, "starting", "n1")],
             [task("a", 1, "running", "n2"), task("b", 2, "running", "n1")]]
    assert lines_over(polls) == "\n".join([
        f"{WHAT}: task 1 on node rc-node-2: pulling the image and preparing",
        f"{WHAT}: task 2 on node rc-node-1: pulling the image and preparing",
        f"{WHAT}: task 2 on node rc-node-1: starting (health check pending)",
        f"{WHAT}: task 1 on node rc-node-2: running and healthy",
        f"{WHAT}: task 2 on node rc-node-1: running and healthy"])


def test_a_node_that_cannot_pull_is_named_with_the_engines_message():
    err = "No such image: 10.250.40.1:5000/reconciler/none:latest"
    polls = [[task("a", 1, "preparing", "n2")], [task("a", 1, "rejected", "n2", err=err)]]
    assert lines_over(polls).splitlines()[-1] == f"{WHAT}: task 1 on node rc-node-2: rejected: {err}"
    assert task_error(task("a", 1, "rejected", "n2", err=err), NODES) == f"task 1 on node rc-node-2 rejected: {err}"
    # A node the caller does not know yet is named by its id; a task not placed says so.
    assert task_error(task("a", 1, "rejected", "n9" * 8, err=err), {}).startswith("task 1 on node n9n9n9n9n9n9 ")
    assert task_error(task("g", None, "pending"), NODES) == "task (not placed yet) pending: no message"


REFUSED = "GET http://127.0.0.1:8501/v1/models/m: <urlopen error [Errno 111] Connection refused>"
FAILED_CHECKS = [
    # (the failed checks' outputs, best candidates first) -> the one the failure shows
    ([REFUSED, "GET http://127.0.0.1:8501/v1/models/m: HTTP Error 503: Service Unavailable"], 1),
    ([REFUSED, "curl: (22) The requested URL returned error: 503"], 1),
    ([REFUSED, "wget: server returned error: HTTP/1.1 503 Service Unavailable"], 1),
    ([REFUSED, "GET /v1/models/m answered HTTP 500"], 1),
    (["", REFUSED], 1),   # a check killed for its timeout says nothing
    ([REFUSED, REFUSED], 0),
    (["", ""], 0),
    (["GET http://127.0.0.1:8501/500: timed out"], 0),
]


def test_a_failed_rollout_shows_the_check_where_the_server_answered():
    """A roll-back stops the new tasks: their last checks are refused, the 503 before says why."""
    shown = [most_telling_failure(outputs) for outputs, _ in FAILED_CHECKS]
    assert shown == [want for _, want in FAILED_CHECKS]
