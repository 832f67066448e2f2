"""State: what reconciler believes it manages (model.py, pure) and where that is kept (store.py)."""
