"""Exit codes, in one place: 0 ok / no changes, 1 error, 2 changes (or drift) present, 3 state locked."""
OK = 0
ERROR = 1
CHANGES = 2
DRIFT = 2  # `reconciler drift`: changes made outside reconciler found
LOCKED = 3
