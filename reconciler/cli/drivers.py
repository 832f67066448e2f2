"""The `--driver` option. Which driver serves a stack is decided in reconciler/drivers/registry.py
(pure; drivers are imported lazily so that validate and plan --no-refresh never need the Docker
SDK's connection)."""
from __future__ import annotations

import click

from reconciler.drivers.registry import DRIVER_NAMES, choose_driver, driver_named, recorded_driver

__all__ = ["choose_driver", "driver_named", "driver_option", "recorded_driver"]


def driver_option(command):
    return click.option("--driver", "driver_name", type=click.Choice(DRIVER_NAMES), default=None,
                        help="Container engine to use; overrides the stack's `driver:` setting.")(command)
