"""Slurm access for clusterops: typed records and one client over the command or pyslurm backend."""

from clusterops.slurm.client import SlurmClient, find_conf
from clusterops.slurm.command import SlurmError, SlurmUnavailable
from clusterops.slurm.records import Job, Node, Reservation

__all__ = ["Job", "Node", "Reservation", "SlurmClient", "SlurmError", "SlurmUnavailable", "find_conf"]
