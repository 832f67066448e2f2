"""What `apply` says while swarm tasks of a roll-out are placed, pull their image and start
(issue 18: pull progress per node and task, the engine's message when a node cannot pull), as
a table: the tasks the engine lists at each poll -> the progress lines. Pure: no engine."""
from __future__ import annotations

from reconciler.drivers.swarm.engine import LABEL_ROLLOUT, task_error, task_progress

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
