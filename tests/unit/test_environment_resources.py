"""Environments that are built (#14): the conda -> pip translation table, what goes into an
image's digest, Dockerfile FROM mapping and context, validate refusals with file:line, and how a
failed build is explained. No Docker."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from reconciler.cli.main import cli
from reconciler.config.conda import CondaPackage, _conda_name, parse_conda, pip_requirement, requirements
from reconciler.config.environments import copy_sources, image_tag, map_dockerfile
from reconciler.config.image_map import rule_from_option
from reconciler.config.settings import LoadOptions
from reconciler.config.stack import load_stack
from reconciler.drivers.common.builds import explain_failure, python_warning
from reconciler.drivers.common.engine import required_images
from reconciler.errors import StackInvalid

CONDA = """name: model-env
channels:
  - conda-forge
dependencies:
  - python=3.12
  - numpy=2.3.1
  - pip=25.1.1
  - pip:
    - tomli==2.0.1
"""
INLINE = "  image: reconciler/demo-tfserving:latest"


def edit(path, old, new):
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def with_conda(stack, conda=CONDA, image="reconciler/demo-tfserving:latest"):
    edit(stack / "deployment.yml", INLINE, f"  image: {image}\n  conda_file: conda.yaml")
    (stack / "conda.yaml").write_text(conda)
    return stack


def environment_of(stack, options=LoadOptions()):
    [environment] = load_stack(stack, options=options).by_kind("environment")
    return environment


# -- conda -> pip ----------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, requirement", [
    ("numpy=2.3.1", "numpy==2.3.1"),
    ("numpy==2.3.1", "numpy==2.3.1"),
    ("numpy=2.3", "numpy==2.3.*"),
    ("numpy 2.3.1", "numpy==2.3.1"),
    ("numpy>=1.2,<2", "numpy>=1.2,<2"),
    ("conda-forge::numpy=2.3.1=py312h1234_0", "numpy==2.3.1"),
    ("scikit-learn=1.7.0", "scikit-learn==1.7.0"),
    ("scipy", "scipy"),
    ("pytorch=2.1.0", "torch==2.1.0"),
    ("py-xgboost=2.0.3", "xgboost==2.0.3"),
    ("msgpack-python", "msgpack"),
    ("pip=25.1.1", None),
    ("python=3.12", None),
    ("cudatoolkit=11.8", None),
])
def test_conda_match_specs_become_pip_requirements(spec, requirement):
    assert pip_requirement(CondaPackage(spec, _conda_name(spec), 1)) == requirement


@pytest.mark.parametrize("packages, expected", [
    # inference-schema's example: conda-forge's scikit-learn 1.2.2 pins numpy<2; its wheel does not.
    (["scikit-learn=1.2.2", "numpy", "pandas"], ["scikit-learn==1.2.2", "pandas", "numpy<2"]),
    (["scipy=1.10", "pandas"], ["scipy==1.10.*", "pandas", "numpy<2"]),
    (["scikit-learn=1.7.0", "numpy"], ["scikit-learn==1.7.0", "numpy"]),
    (["scikit-learn=1.2.2", "numpy=1.26.4"], ["scikit-learn==1.2.2", "numpy==1.26.4"]),
    (["scikit-learn"], ["scikit-learn"]),
])
def test_packages_built_before_numpy_2_keep_conda_forges_numpy_bound(packages, expected):
    from reconciler.config.conda import conda_requirements
    text = "dependencies:\n" + "".join(f"  - {p}\n" for p in packages)
    assert conda_requirements(parse_conda(text)) == expected


def test_the_quickstart_conda_file_translates_to_its_pypi_packages():
    quickstart = CONDA.replace("  - pip:\n    - tomli==2.0.1\n", "  - scikit-learn=1.7.0\n  - pip:\n"
                               "    - azureml-inference-server-http==1.4.1\n    - inference-schema[numpy-support]\n")
    parsed = parse_conda(quickstart)
    assert parsed.python == "3.12"
    assert requirements(parsed) == ["numpy==2.3.1", "scikit-learn==1.7.0", "azureml-inference-server-http==1.4.1",
                                    "inference-schema[numpy-support]"]


def test_python_differences_are_said_in_the_words_of_the_issue():
    assert python_warning("3.12", "3.11.2") == "conda file asks python=3.12, image has 3.11.2; packages are " \
                                               "installed for 3.11"
    assert python_warning("3.11", "3.11.2") is None and python_warning(None, "3.11.2") is None


# -- an environment becomes a resource ----------------------------------------------------------------
def test_a_conda_environment_is_a_resource_its_deployment_runs(demo_stack):
    environment = environment_of(with_conda(demo_stack))
    assert str(environment.address) == "environment.half-plus-two-tfserving:1"
    assert environment.spec["conda_requirements"] == ["numpy==2.3.1"]
    assert environment.spec["pip_requirements"] == ["tomli==2.0.1"]
    [deployment] = load_stack(demo_stack).by_kind("deployment")
    assert deployment.spec["image"] == environment.spec["image"] == image_tag(
        "half-plus-two-tfserving", "1", environment.spec["digest"])
    assert environment.address in deployment.depends_on


def test_an_environment_document_is_one_resource_for_every_deployment_that_names_it(demo_stack):
    (demo_stack / "conda.yaml").write_text(CONDA)
    (demo_stack / "environment.yml").write_text(
        "$schema: https://azuremlschemas.azureedge.net/latest/environment.schema.json\nname: shared\nversion: 3\n"
        "image: reconciler/demo-tfserving:latest\nconda_file: conda.yaml\n")
    edit(demo_stack / "deployment.yml", "environment:\n", "environment: azureml:shared@latest\nx_environment:\n")
    text = (demo_stack / "deployment.yml").read_text()
    (demo_stack / "deployment.yml").write_text(text[:text.index("x_environment:")] +
                                               text[text.index("instance_type:"):])
    graph = load_stack(demo_stack)
    assert [str(r.address) for r in graph.by_kind("environment")] == ["environment.shared:3"]


def test_every_input_of_the_build_changes_the_tag_and_nothing_else_does(demo_stack):
    first = environment_of(with_conda(demo_stack)).spec["image"]
    edit(demo_stack / "deployment.yml", "instance_count: 1", "instance_count: 2")
    assert environment_of(demo_stack).spec["image"] == first
    edit(demo_stack / "conda.yaml", "numpy=2.3.1", "numpy=2.3.2")
    second = environment_of(demo_stack).spec["image"]
    assert second != first
    mapped = LoadOptions(images=(rule_from_option("reconciler/demo-tfserving=reconciler/gateway:latest"),))
    assert environment_of(demo_stack, mapped).spec["base_image"] == "reconciler/gateway:latest"
    assert environment_of(demo_stack, mapped).spec["image"] != second


DOCKERFILE = "FROM docker.io/tensorflow/serving:latest AS serving\nFROM serving\nENV MODEL_NAME=hpt\n" \
             "COPY --chown=1000 models /models\nCOPY [\"extra.txt\", \"/opt/\"]\nCOPY --from=serving /x /y\n"


def with_build(stack, dockerfile=DOCKERFILE):
    (stack / "ctx" / "models").mkdir(parents=True)
    (stack / "ctx" / "models" / "1.txt").write_text("model")
    (stack / "ctx" / "extra.txt").write_text("extra")
    (stack / "ctx" / "unused.txt").write_text("not copied")
    (stack / "ctx" / "serve.Dockerfile").write_text(dockerfile)
    edit(stack / "deployment.yml", INLINE, "  build:\n    path: ctx\n    dockerfile_path: serve.Dockerfile")
    return stack


def test_a_dockerfile_build_maps_its_from_lines_and_digests_what_it_copies(demo_stack):
    mapped = LoadOptions(images=(rule_from_option("docker.io/tensorflow/serving=reconciler/demo-tfserving:latest"),))
    graph = load_stack(with_build(demo_stack), options=mapped)
    [environment] = graph.by_kind("environment")
    spec = environment.spec
    assert spec["dockerfile"].splitlines()[:2] == ["FROM reconciler/demo-tfserving:latest AS serving", "FROM serving"]
    assert spec["base_images"] == ["reconciler/demo-tfserving:latest"]
    assert sorted(spec["context_files"]) == ["extra.txt", "models"]
    assert any("FROM docker.io/tensorflow/serving:latest -> reconciler/demo-tfserving:latest" in s
               for s in graph.substitutions)
    (demo_stack / "ctx" / "unused.txt").write_text("changed, but never copied")
    assert environment_of(demo_stack, mapped).spec["image"] == spec["image"]
    (demo_stack / "ctx" / "models" / "1.txt").write_text("new model")
    assert environment_of(demo_stack, mapped).spec["image"] != spec["image"]


def test_copy_sources_skip_flags_and_other_stages():
    assert copy_sources(DOCKERFILE) == [("models", 4), ("extra.txt", 5)]
    assert copy_sources("COPY a \\\n  b /dst/\n") == [("a", 1), ("b", 1)]
    assert map_dockerfile("FROM $BASE\n", ()).bases == ()


def test_plan_preflight_needs_base_images_not_the_tags_it_builds(demo_stack):
    graph = load_stack(with_conda(demo_stack))
    specs = [(r.address, r.spec) for r in graph.resources.values()]
    assert required_images(specs, "reconciler/gateway:latest") == ["reconciler/demo-tfserving:latest",
                                                                    "reconciler/gateway:latest"]


def shared_environment(stack, body="image: reconciler/demo-tfserving:latest\n"):
    """The deployment's inline environment moved to environment.yml (azureml:shared:3)."""
    (stack / "environment.yml").write_text(
        "$schema: https://azuremlschemas.azureedge.net/latest/environment.schema.json\nname: shared\nversion: 3\n" + body)
    text = (stack / "deployment.yml").read_text()
    start, end = text.index("environment:\n"), text.index("instance_type:")
    (stack / "deployment.yml").write_text(text[:start] + "environment: azureml:shared:3\n" + text[end:])
    return stack


def image_by_name(stack):
    text = (stack / "deployment.yml").read_text()
    start, end = text.index("environment:\n"), text.index("instance_type:")
    (stack / "deployment.yml").write_text(text[:start] + "environment: reconciler/demo-tfserving:latest\n" + text[end:])
    return stack


def shared_conda_environment(stack):
    (stack / "conda.yaml").write_text(CONDA)
    return shared_environment(stack, "image: reconciler/demo-tfserving:latest\nconda_file: conda.yaml\n")


IMAGE_SOURCES = [
    # (how the stack names its image) -> where each resource's image is written
    (lambda stack: stack, "deployment.half-plus-two/tfserving deployment.yml:11"),
    (image_by_name, "deployment.half-plus-two/tfserving deployment.yml:8"),
    (shared_environment, "deployment.half-plus-two/tfserving environment.yml:4"),
    (shared_conda_environment, "deployment.half-plus-two/tfserving environment.yml:4\n"
                               "environment.shared:3 environment.yml:4"),
    (with_build, "deployment.half-plus-two/tfserving deployment.yml:11\n"
                 "environment.half-plus-two-tfserving:1 deployment.yml:11"),
]


@pytest.mark.parametrize("arrange, expected", IMAGE_SOURCES)
def test_each_image_is_located_where_the_stack_writes_it(demo_stack, arrange, expected):
    """Where preflight says a missing image is written: the deployment's `image:` line, an
    azureml: environment's own document, a build's `build:` line."""
    graph = load_stack(arrange(demo_stack))
    located = [f"{r.address} {r.image_source.rpartition('/')[2]}" for r in graph.resources.values() if r.image_source]
    assert "\n".join(sorted(located)) == expected


# -- validate refusals, file:line, exit 1 --------------------------------------------------------------
def validate(stack) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["validate", str(stack)])
    return result.exit_code, result.output.replace(f"{stack}/", "")


def test_a_conda_only_package_is_refused_at_its_line(demo_stack):
    code, output = validate(with_conda(demo_stack, CONDA.replace("  - pip=25.1.1\n", "  - pip=25.1.1\n  - mkl\n"
                                                                  "  - cudatoolkit=11.8\n")))
    assert code == 1
    assert "conda.yaml:8: dependencies: conda package 'mkl' is only on conda channels, not on PyPI" in output
    assert "conda.yaml:9: dependencies: conda package 'cudatoolkit=11.8' is only on conda channels" in output


def test_a_missing_conda_file_is_refused_at_its_line(demo_stack):
    edit(demo_stack / "deployment.yml", INLINE, f"{INLINE}\n  conda_file: nowhere.yaml")
    code, output = validate(demo_stack)
    assert code == 1 and "deployment.yml:12: environment.conda_file: conda file 'nowhere.yaml' is not there" in output


def test_image_and_build_both_set_inline_is_refused_at_its_line(demo_stack):
    edit(demo_stack / "deployment.yml", INLINE, f"{INLINE}\n  build:\n    path: .")
    code, output = validate(demo_stack)
    assert code == 1
    assert "deployment.yml:12: environment.build: environment half-plus-two-tfserving:1 has both image and build" \
        in output


def test_a_copy_source_missing_from_the_context_is_refused_at_its_dockerfile_line(demo_stack):
    code, output = validate(with_build(demo_stack, DOCKERFILE + "COPY nothere /x\n"))
    assert code == 1 and "ctx/serve.Dockerfile:7: COPY/ADD source 'nothere' is not in the build context" in output


def test_an_environment_document_without_image_or_build_is_one_refusal(demo_stack):
    (demo_stack / "conda.yaml").write_text(CONDA)
    (demo_stack / "environment.yml").write_text(
        "$schema: https://azuremlschemas.azureedge.net/latest/environment.schema.json\nname: bare\n"
        "conda_file: conda.yaml\n")
    text = (demo_stack / "deployment.yml").read_text()
    (demo_stack / "deployment.yml").write_text(text[:text.index("environment:\n")] + "environment: azureml:bare:1\n"
                                               + text[text.index("instance_type:"):])
    code, output = validate(demo_stack)
    assert code == 1 and output.count("environment.yml:") == 1
    assert "environment.yml:1: environment bare:1 has neither image nor build" in output


def test_a_build_context_must_exist(demo_stack):
    edit(demo_stack / "deployment.yml", INLINE, "  build:\n    path: gone")
    with pytest.raises(StackInvalid, match="build context 'gone' is not a folder"):
        load_stack(demo_stack)


# -- a failed build, explained -------------------------------------------------------------------------
SPEC = {"image": "reconciler/env-x:1-abc", "base_image": "reconciler/azureml-inference-base:latest",
        "name": "x", "version": "1"}


def test_conda_in_a_dockerfile_on_a_base_without_conda_says_conda_is_needed():
    summary, hint = explain_failure(SPEC, "Step 5/7 : RUN conda env create\n/bin/sh: 1: conda: not found\n", "x")
    assert "the base image has no conda" in summary and "FROM an image that has conda" in hint


def test_pip_without_a_route_names_the_package_and_the_ca_bundle():
    log = ("reconciler-error: pip-failed\nWARNING: Retrying ... SSLError(SSLCertVerificationError(1, "
           "'[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed'))\n"
           "ERROR: Could not find a version that satisfies the requirement tomli==2.0.1 (from versions: none)\n")
    summary, hint = explain_failure(SPEC, log, "returned a non-zero code: 1")
    assert "no route to a package index for tomli==2.0.1 (CERTIFICATE_VERIFY_FAILED)" in summary
    assert "RECONCILER_BUILD_CA" in hint


def test_a_package_pip_cannot_find_is_named():
    log = "reconciler-error: pip-failed\nERROR: No matching distribution found for nosuchpkg==9\n"
    assert explain_failure(SPEC, log, "")[0].endswith("pip could not install nosuchpkg==9")


# -- refresh: a built image removed by hand ------------------------------------------------------------
def test_a_built_image_gone_from_the_engine_is_drift_that_rebuilds_it():
    from reconciler.drivers.docker.fold import DockerObservation, fold
    from reconciler.state.model import StateFile, StateRecord
    record = StateRecord("environment.env:1", "docker", {"image": "reconciler/env-env:1-abc"}, "h")
    state = StateFile("s", "lineage", 1, {record.address: record})
    [drift] = fold(state, DockerObservation([], environment_images={record.address: None})).drift
    assert (str(drift.address), drift.kind, drift.repair) == ("environment.env:1", "missing", "replace")
    assert "image reconciler/env-env:1-abc no longer exists" in drift.detail
    current = {"id": "sha256:1", "stale": False}
    assert not fold(state, DockerObservation([], environment_images={record.address: current})).drift
    [stale] = fold(state, DockerObservation([], environment_images={record.address: {**current, "stale": True}})).drift
    assert (stale.kind, stale.repair) == ("base-image-changed", "replace")
    assert "built from a base image that has been rebuilt since" in stale.detail


def test_a_build_context_changed_since_the_plan_is_not_built(demo_stack, tmp_path):
    from reconciler.drivers.base import StepContext
    from reconciler.drivers.common.builds import _context_tar
    from reconciler.errors import DriverError
    spec = environment_of(with_build(demo_stack)).spec
    ctx = StepContext(stack="s", stack_dir=demo_stack, state_dir=tmp_path, records=dict)
    import tarfile
    names = tarfile.open(fileobj=_context_tar(ctx, spec)).getnames()
    assert sorted(names) == [".reconciler.Dockerfile", "extra.txt", "models", "models/1.txt"]
    (demo_stack / "ctx" / "extra.txt").write_text("changed after the plan")
    with pytest.raises(DriverError, match=r"changed since the plan was made \(extra.txt\)"):
        _context_tar(ctx, spec)


class _Manager:
    """A swarm manager as the swarm driver's preflight asks it (info, nodes); no engine here has
    several nodes, so the multi-node answer cannot come from a real one."""

    def __init__(self, nodes: int) -> None:
        self.nodes = type("Nodes", (), {"list": lambda _self: [object()] * nodes})()

    def info(self):
        return {"Swarm": {"LocalNodeState": "active", "ControlAvailable": True}}


def test_swarm_refuses_to_build_for_a_swarm_of_several_nodes(demo_stack):
    from reconciler.drivers.swarm.driver import SwarmDriver
    from reconciler.errors import DriverError
    graph = load_stack(with_conda(demo_stack))
    specs = [(r.address, r.spec) for r in graph.resources.values()]
    with pytest.raises(DriverError, match=r"environment.half-plus-two-tfserving:1 would be built on this manager "
                                          r"only, and the swarm has 3 nodes"):
        SwarmDriver(_Manager(3)).preflight(specs)
