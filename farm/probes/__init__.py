"""Probes: checks run against a built engine. See ``farm.probes.registry``."""

from farm.probes.registry import Probe, ProbeContext, get, names, register

__all__ = ["Probe", "ProbeContext", "get", "names", "register"]
