"""reconciler: Terraform-style plan/apply for Azure ML CLI v2 online endpoints on Docker."""

__version__ = "0.1.0"
