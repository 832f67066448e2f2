"""Drivers: the only code that talks to a container engine.

base.py is the contract (Driver and its optional capabilities), registry.py the drivers by
name, common/ what they share; each driver package (docker/, swarm/) imports no other."""
