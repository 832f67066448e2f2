"""The image map: run another image in place of the one a document names, like kustomize's
`images:`. Pure.

So that `mcr.microsoft.com/azureml/...:latest` or `docker.io/tensorflow/serving:latest`, copied
from Azure ML's examples, runs on a local stand-in where the registry is unreachable. Rules come
from the stack settings (`images: [{name, newName, newTag, digest}]`) and from `--image FROM=TO`,
which win. A rule's `name` is a repository (docker.io/x, x and library/x are one repository);
`name: repo:tag` matches that tag only; `name: registry/path/*` matches every repository under
that path (the stand-in for a whole family of base images, e.g. mcr.microsoft.com/azureml/*).

A machine can add rules of its own (`RECONCILER_IMAGE_MAP`: a YAML file with the same `images:`
list, e.g. images/stand-ins.yaml on a machine without a registry); they come last, so the
stack's settings and `--image` win over them.
"""
from __future__ import annotations

from dataclasses import dataclass

DOCKER_HUB = ("docker.io/", "index.docker.io/", "registry-1.docker.io/")


@dataclass(frozen=True)
class ImageRule:
    name: str
    tag: str | None = None
    new_name: str | None = None
    new_tag: str | None = None
    digest: str | None = None
    source: str = ""  # where the rule was given, for the plan's note

    def describe(self) -> str:
        return self.source


def split_reference(reference: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of an image reference."""
    rest, _, digest = reference.partition("@")
    slash, colon = rest.rfind("/"), rest.rfind(":")
    if colon > slash:
        return rest[:colon], rest[colon + 1:], digest or None
    return rest, None, digest or None


def canonical_repository(name: str) -> str:
    """docker.io/library/x, docker.io/x, library/x and x are one repository: x."""
    for prefix in DOCKER_HUB:
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    return name.removeprefix("library/")


def rule_from_option(text: str) -> ImageRule:
    """`--image FROM=TO`: FROM a repository (optionally with :tag), TO a whole image reference."""
    source, eq, target = text.partition("=")
    if not eq or not source or not target:
        raise ValueError("--image expects FROM=TO (e.g. "
                         f"docker.io/tensorflow/serving=reconciler/demo-tfserving:latest), got {text!r}")
    name, tag, _ = split_reference(source)
    new_name, new_tag, digest = split_reference(target)
    return ImageRule(name, tag, new_name, new_tag, digest, source=f"--image {text}")


def rule_from_setting(entry: dict, where: str) -> ImageRule:
    name, tag, _ = split_reference(entry["name"])
    return ImageRule(name, tag, entry.get("newName"), entry.get("newTag"), entry.get("digest"), source=where)


def names_repository(rule: ImageRule, repository: str) -> bool:
    pattern, repository = canonical_repository(rule.name), canonical_repository(repository)
    if pattern.endswith("/*"):
        return repository.startswith(pattern[:-1])
    return pattern == repository


def substitute(image: str, rules: tuple[ImageRule, ...]) -> tuple[str, ImageRule | None]:
    """The image to run instead of `image`, and the rule that said so (the first that matches)."""
    name, tag, digest = split_reference(image)
    for rule in rules:
        if not names_repository(rule, name):
            continue
        if rule.tag is not None and rule.tag != (tag or "latest"):
            continue
        new_name = rule.new_name or name
        if rule.digest:
            return f"{new_name}@{rule.digest}", rule
        new_tag = rule.new_tag or tag
        kept_digest = f"@{digest}" if digest and not rule.new_tag else ""
        return new_name + (f":{new_tag}" if new_tag else "") + kept_digest, rule
    return image, None
