"""Configuration: from a stack directory of Azure ML CLI v2 YAML to a validated DesiredGraph."""
